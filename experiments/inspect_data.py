"""Statistics and an mp4 preview (with captions) of collected episode files.

    python -m experiments.inspect_data data/scene --preview preview.mp4 --num-preview 4
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from envs.episodes import h5_files, list_episodes, read_episode
from evaluation.videos import caption_frame, fixed_lines, wrap_text, write_mp4


def collect_stats(files: list[str]) -> dict:
    """Counts, success rates and vocabulary over every episode in ``files``."""
    tasks, task_success = Counter(), Counter()
    skill_total, skill_success = Counter(), Counter()
    frames = chunks = revisits = 0
    shapes, settings = set(), set()
    for path in files:
        for key in list_episodes(path):
            ep = read_episode(path, key)
            a = ep["attrs"]
            tasks[a["task"]] += 1
            task_success[a["task"]] += bool(a.get("task_success", False))
            for text, ok in zip(ep["language"], ep["success"]):
                skill_total[text] += 1
                skill_success[text] += bool(ok)
            frames += len(ep["frames"])
            chunks += len(ep["language"])
            revisits += len(ep["revisits"])
            shapes.add("x".join(map(str, ep["frames"].shape[1:])))
            settings.add(f"chunk_len={a['chunk_len']} frame_skip={a['frame_skip']}")
    return dict(
        files=len(files),
        episodes=sum(tasks.values()),
        frames=frames,
        chunks=chunks,
        revisit_pairs=revisits,
        frame_shapes=sorted(shapes),
        chunk_len_frame_skip=sorted(settings),
        tasks={t: dict(episodes=n, task_success=round(task_success[t] / n, 3)) for t, n in sorted(tasks.items())},
        skills={s: dict(chunks=n, success=round(skill_success[s] / n, 3)) for s, n in sorted(skill_total.items())},
    )


def preview_frames(episode: dict, scale: int) -> list[np.ndarray]:
    """Captioned frames of one episode: task, instruction, and each chunk's skill and outcome."""
    a, L = episode["attrs"], int(episode["attrs"]["chunk_len"])
    width = max(20, episode["frames"].shape[2] * scale // 6)
    head = [f"{a['task']} (seed {a['seed']})", *fixed_lines(wrap_text(a["instruction"], width), 3)]
    revisited = {int(j) for _, j in episode["revisits"]}
    out = []
    for t, frame in enumerate(episode["frames"]):
        if t == 0:
            chunk = ["reset", ""]
        else:
            k = (t - 1) // L
            status = "ok" if episode["success"][k] else "not yet"
            chunk = fixed_lines(wrap_text(f"[{k + 1}] {episode['language'][k]} ({status})", width), 2)
        mark = ["revisit" if t in revisited else ""]
        out.append(caption_frame(frame, head + chunk + mark, scale))
    return out


def write_preview(files: list[str], path: str, num: int, fps: int, scale: int, seed: int) -> list[str]:
    """mp4 of ``num`` random episodes one after the other; returns their 'file:key' names."""
    refs = [(f, k) for f in files for k in list_episodes(f)]
    rng = np.random.default_rng(seed)
    chosen = [refs[i] for i in sorted(rng.choice(len(refs), size=min(num, len(refs)), replace=False))]
    frames = []
    for f, k in chosen:
        frames += preview_frames(read_episode(f, k), scale)
        frames += [np.zeros_like(frames[-1])] * max(1, fps // 2)  # short black gap
    h, w = max(f.shape[0] for f in frames), max(f.shape[1] for f in frames)  # mixed frame sizes
    frames = [np.pad(f, ((0, h - f.shape[0]), (0, w - f.shape[1]), (0, 0))) for f in frames]
    write_mp4(path, frames, fps)
    return [f"{Path(f).name}:{k}" for f, k in chosen]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="h5 files or directories of them")
    parser.add_argument("--preview", default="preview.mp4", help="mp4 to write ('' for none)")
    parser.add_argument("--num-preview", type=int, default=4, help="episodes in the preview")
    parser.add_argument("--fps", type=int, default=5)
    parser.add_argument("--scale", type=int, default=4, help="pixel upscaling of the preview")
    parser.add_argument("--seed", type=int, default=0, help="picks the preview episodes")
    args = parser.parse_args(argv)
    files = h5_files(args.paths)
    if not files:
        parser.error(f"no h5 files in {args.paths}")
    stats = collect_stats(files)
    if args.preview:
        stats["preview"] = args.preview
        stats["preview_episodes"] = write_preview(
            files, args.preview, args.num_preview, args.fps, args.scale, args.seed
        )
    print(json.dumps(stats, indent=1, default=str))
    return stats


if __name__ == "__main__":
    main()

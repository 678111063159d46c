"""Play a long-horizon, language-instructed episode in the learned simulator, with and without memory.

    python -m experiments.demo                      # shipped default model, CPU, ~30 s on 2 cores
    python -m experiments.demo --task memory_drawer_locked --steps 1 --out runs/demo
    python -m experiments.demo --temp-lora recall   # the event rule that keeps the hidden cube; ~2 min on 2 cores

Two `SlowFastVGen-v0` envs (one shared model) start from the same real frame and receive the task's
scripted skill plan, one with Temp-LoRA episodic memory and one without; each skill runs until the model's
success head sees it done (at most ``--skill-chunks`` chunks). The mp4 shows them side by
side under the instruction and the current skill; the drawer is reopened at the end, a revisit.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from PIL import Image

import envs  # noqa: F401  (registers SlowFastVGen-v0)
from envs.real.skills import SKILLS
from envs.real.tasks import get_task
from evaluation.videos import caption_frame, fixed_lines, wrap_text, write_mp4
from worldmodel.config import TEMP_LORA_RULES


def play(task: str, model: str, steps: int | None, seed: int, precision: str = "auto", skill_chunks: int = 3,
         temp_lora: str = "model") -> tuple[list[np.ndarray], list[list[str]], dict[str, list[float]]]:
    """Frames of both envs chunk by chunk, each env's caption per chunk ("[k/n] skill"), and per-step seconds.

    Each skill of the plan runs until the model's success head sees it done on the imagined chunk (``info["success"]``)
    or for ``skill_chunks`` chunks, as the scripted expert repeats a skill until the simulator's check passes and the
    agents do (`agents.planning.SkillRuns`): a real pick-and-place takes two chunks (the median over the held-out
    episodes), so one chunk per skill would ask the model for a cube in the drawer that the real scene never shows
    after one. Without heads (no ``success`` in the info) every skill gets one chunk. ``temp_lora``: "model" (the
    model's own fast rule) or a named rule (`worldmodel.config.TEMP_LORA_RULES`) for the env with memory."""
    plan = [SKILLS[i] for i in get_task(task).build(np.random.default_rng(seed)).plan]
    kwargs = dict(model=model, task=task, action_mode="text", denoise_steps=steps,
                  max_episode_steps=len(plan) * skill_chunks, precision=precision)
    label = "with Temp-LoRA" if temp_lora == "model" else f"with Temp-LoRA ({temp_lora})"
    runs = {label: gym.make("SlowFastVGen-v0", temp_lora=True if temp_lora == "model" else temp_lora, **kwargs),
            "without Temp-LoRA": gym.make("SlowFastVGen-v0", temp_lora=False, **kwargs)}
    videos: dict[str, list[np.ndarray]] = {}
    captions: dict[str, list[str]] = {}
    times: dict[str, list[float]] = {}
    for name, env in runs.items():
        obs, _ = env.reset(seed=seed)
        frames, captions[name], times[name] = [obs], [], []
        for k, skill in enumerate(plan):
            for _ in range(skill_chunks):
                start = time.perf_counter()
                obs, _, _, _, info = env.step(skill)
                times[name].append(time.perf_counter() - start)
                frames.extend(np.asarray(info["frames"]))
                captions[name].append(f"[{k + 1}/{len(plan)}] {skill}")
                if info.get("success", True):
                    break
        videos[name] = frames
        env.close()
    # the columns side by side: a shorter one holds its last frame
    length, chunks = max(map(len, videos.values())), max(map(len, captions.values()))
    for name, frames in videos.items():
        frames.extend([frames[-1]] * (length - len(frames)))
        captions[name].extend([captions[name][-1] + " (done)"] * (chunks - len(captions[name])))
    return [np.stack(f) for f in videos.values()], list(captions.values()), times


def compose(videos: list[np.ndarray], names: list[str], captions: list[list[str]], instruction: str,
            chunk_len: int, scale: int = 3) -> list[np.ndarray]:
    """Side-by-side captioned frames: instruction and each column's current skill under it."""
    width = videos[0].shape[2] * scale // 6
    head = fixed_lines(wrap_text(instruction, width * len(videos)), 2)
    out = []
    for t in range(len(videos[0])):
        cols = [caption_frame(v[t], [name, *fixed_lines(wrap_text("start" if t == 0 else c[(t - 1) // chunk_len],
                                                                  width), 2)], scale)
                for name, v, c in zip(names, videos, captions)]
        h = max(c.shape[0] for c in cols)
        row = np.concatenate([np.pad(c, ((0, h - c.shape[0]), (0, 4), (0, 0))) for c in cols], axis=1)
        out.append(caption_frame(row, head, 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="memory_drawer", help="a task of envs.real.tasks (its expert plan is played)")
    parser.add_argument("--model", default="default", help="'default', a preset name or a model folder")
    parser.add_argument("--steps", type=int, default=None,
                        help="denoising passes per chunk (default: the model's own; 2 for the shipped default)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="arithmetic of generation and fast updates (auto: bf16 where the device has it natively)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/demo", help="output folder")
    parser.add_argument("--fps", type=int, default=6)
    parser.add_argument("--skill-chunks", type=int, default=3,
                        help="most chunks a skill runs while the success head does not see it done (1: one each)")
    parser.add_argument("--temp-lora", default="model", choices=["model", *TEMP_LORA_RULES],
                        help="the memory env's fast rule: the model's own, or 'recall' (the event rule that keeps a "
                             "hidden cube: docs/RESULTS.md, 'Session 64' to 'Session 66'; ~8 s a CPU step)")
    args = parser.parse_args()

    videos, captions, times = play(args.task, args.model, args.steps, args.seed, args.precision, args.skill_chunks,
                                   args.temp_lora)
    chunk_len = (len(videos[0]) - 1) // len(captions[0])
    frames = compose(videos, list(times), captions,
                     get_task(args.task).build(np.random.default_rng(args.seed)).instruction, chunk_len)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"demo_{args.task}.mp4"
    write_mp4(path, frames, args.fps)
    sheet = out / f"demo_{args.task}.png"  # the start and the last frame of every chunk, top to bottom
    Image.fromarray(np.concatenate(frames[::chunk_len], axis=0)).save(sheet)
    for name, ts in times.items():
        print(f"{name}: {len(ts)} chunks, {np.mean(ts):.2f} s per step (mean), {np.sum(ts):.1f} s total")
    print(f"video: {path}, frames: {sheet}")


if __name__ == "__main__":
    main()

"""The paper's Table 2: SlowFast-VGen and its ablations on held-out memory episodes.

    python -m experiments.evaluate --data data/scene_eval --episodes 50 --out runs/table2
    python -m experiments.evaluate --data data/scene_eval --device cuda --batch 16 --i3d i3d_torchscript.pt
    python -m experiments.evaluate --synthetic --model tiny --episodes 4 --steps 2     # smoke test (CPU)

Variants (``--variants``, default all five):

- ``full``: Temp-LoRA with the local learning rule (the model's own rank/lr/steps/objective).
- ``no_temp_lora``: the slow weights Φ alone.
- ``no_chunk_input``: a separately trained model that conditions on one frame (context_frames=1),
  with its own Temp-LoRA; give it with ``--no-chunk-model PATH`` (skipped with a note otherwise).
- ``no_local_rule``: Temp-LoRA trained on windows over the whole generated sequence (``full_sequence``).
- ``original``: Temp-LoRA trained on the generated chunk alone (the text-generation design).

Rollout (``--mode``):

- ``free`` (default): start from the episode's first real frame, feed the episode's recorded per-chunk
  actions (language + action vectors), generate the whole video chunk after chunk, each chunk conditioned
  on the last generated frames; Temp-LoRA learns from each generated chunk right after it is made.
- ``teacher``: every chunk is generated from the *real* previous frames; Temp-LoRA then learns from the
  real chunk (real context + the true new frames), as an agent's world model learns from what it
  observes. Scores still use generated frames only, and a chunk is always generated before its real
  frames reach the memory.

The episode's frames are strided by ``--frame-skip`` (as in training); model chunk c makes frames
``1 + c*new_frames ...`` with the action vectors behind those frames and the language of the episode chunk
it starts in, so episodes whose chunk length differs from the model's ``new_frames`` work too.

Metrics per episode (mean ± std over episodes): SCuts (PySceneDetect cuts in the generated video),
SRC x100 (frames i and j of each recorded revisit pair, in the generated video; features from
``--src-features`` or the offline pixel stand-in), PSNR (dB) / SSIM x100 / LPIPS x100 against the real
video on generated frames only, FVD over clips of ``--fvd-frames`` generated frames (I3D from ``--i3d``),
the mean time of one Temp-LoRA update call and of one chunk's generation. A reference row scores the
real video itself (SCuts and SRC of the ground truth). Writes ``table2.json``, ``table2.md`` (with
command, machine and date) and ``table2_grid.mp4`` (real video beside every variant, one episode).

Held-out data: collect the evaluation episodes separately from the training data (another seed), e.g.
``python -m experiments.collect out_dir=data/scene_eval seed=1 num_episodes=60 '~tasks'
'+tasks={memory_drawer: 1, memory_drawer_locked: 1, memory_cube_return: 1}'`` (training used seed 0);
for Crafter, ``python -m experiments.collect domain=crafter out_dir=data/crafter_eval seed=1 num_episodes=60
'~tasks' '+tasks={path_and_return: 1}'`` and ``--data data/crafter_eval`` here.
``--batch B`` rolls B episodes out together, each with its own Temp-LoRA memory (per-sample LoRA
factors, ``worldmodel.batched_lora``); ``--batch 1`` (default) uses the peft ``TempLoRA``. The numbers
depend on the batch composition only through the random draws.

Generate here, score elsewhere: ``--save-videos`` also writes the generated videos (``OUT/videos``, one
compressed npz per episode, plus ``rollout.json`` with settings and timings); ``--from-videos OUT/videos``
scores them later without a model. Where the metrics' packages (scenedetect, scikit-image) are missing,
the videos are saved automatically and the command prints the scoring command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from experiments.bench import command_line, machine_name, resolve_device, utc_date

VARIANTS: tuple[str, ...] = ("full", "no_temp_lora", "no_chunk_input", "no_local_rule", "original")
LABELS = {
    "full": "SlowFast-VGen (full)",
    "no_temp_lora": "without Temp-LoRA",
    "no_chunk_input": "without chunk input",
    "no_local_rule": "without local learning rule",
    "original": "original Temp-LoRA",
}
SHORT = {"full": "full", "no_temp_lora": "no Temp-LoRA", "no_chunk_input": "no chunk input",
         "no_local_rule": "no local rule", "original": "original Temp-LoRA"}
# The paper's SCuts / SRC for each variant (supplement Table 2; main Table 2 for full and no_temp_lora).
PAPER = {
    "full": (0.37, 93.71),
    "no_temp_lora": (1.88, 89.04),
    "no_chunk_input": (1.24, 90.01),
    "no_local_rule": (0.36, 90.27),
    "original": (0.55, 92.24),
}
# Episodes with revisit pairs: the scene's memory tasks and Crafter's path-and-return walks.
MEMORY_TASKS: tuple[str, ...] = ("memory_drawer", "memory_drawer_locked", "memory_cube_return", "path_and_return")
MODES = ("free", "teacher")
METRICS = ("scuts", "src", "psnr", "ssim", "psnr_revisit", "ssim_revisit", "lpips")
NO_CHUNK_NOTE = ("no_chunk_input skipped: pass --no-chunk-model PATH (a model trained with context_frames=1, "
                 "e.g. `python -m experiments.train ... model.context_frames=1`)")


# ----------------------------------------------------------------------------------------- episodes
@dataclass
class EvalEpisode:
    """One episode at the evaluation stride: frames (T, H, W, 3), T = 1 + K*L; actions (T-1, A)."""

    name: str
    task: str
    frames: np.ndarray
    actions: np.ndarray
    language: list[str]
    chunk_len: int
    revisits: np.ndarray  # (R, 2) frame pairs (i, j) at this stride

    def num_model_chunks(self, new_frames: int) -> int:
        return math.ceil((len(self.frames) - 1) / new_frames)

    def chunk_action(self, c: int, new_frames: int) -> tuple[str, np.ndarray]:
        """Language and action vectors (new_frames, A) behind model chunk c's frames (past the end the
        last action repeats: such frames are cut off afterwards)."""
        first = c * new_frames  # actions[t - 1] is behind frame t; chunk c makes frames 1 + first ...
        rows = np.clip(np.arange(first, first + new_frames), 0, len(self.actions) - 1)
        k = min(first // self.chunk_len, len(self.language) - 1)
        return self.language[k], self.actions[rows]


def stride_episode(episode: dict, frame_skip: int, name: str) -> EvalEpisode:
    """An ``envs.episodes`` dict at stride ``frame_skip`` (``envs.data`` convention: within each chunk the
    last frame of every group of ``frame_skip`` is kept, actions are averaged over the group; revisit
    pairs map to the nearest kept frame)."""
    L = int(episode["attrs"]["chunk_len"])
    if frame_skip < 1 or L % frame_skip:
        raise ValueError(f"{name}: chunk_len {L} is not divisible by --frame-skip {frame_skip}")
    frames, actions = np.asarray(episode["frames"]), np.asarray(episode["actions"], np.float32)
    s = frame_skip
    if s > 1:
        frames = frames[np.arange(0, len(frames), s)]
        actions = actions.reshape(-1, s, actions.shape[-1]).mean(axis=1)
    pairs = np.rint(np.asarray(episode["revisits"], np.float64).reshape(-1, 2) / s).astype(np.int64)
    pairs = pairs[(pairs[:, 0] < pairs[:, 1])] if len(pairs) else pairs.reshape(0, 2)
    pairs = np.unique(pairs, axis=0) if len(pairs) else pairs
    return EvalEpisode(name, str(episode["attrs"].get("task", "")), frames, actions, list(episode["language"]),
                       L // s, pairs.reshape(-1, 2).astype(np.int64))


def load_h5_episodes(source: str, tasks: Sequence[str] | None, limit: int, frame_skip: int) -> list[EvalEpisode]:
    """The first ``limit`` episodes (files and keys in sorted order) whose task is in ``tasks``."""
    import h5py

    from envs.episodes import h5_files, list_episodes, read_episode

    files = h5_files(source)
    if not files:
        raise FileNotFoundError(f"no h5 episode files at {source!r}")
    chosen = []
    for path in files:
        keys = list_episodes(path)
        with h5py.File(path, "r") as f:
            for key in keys:
                task = f[key].attrs.get("task", "")
                task = task.decode() if isinstance(task, bytes) else str(task)
                if tasks is None or task in tasks:
                    chosen.append((path, key))
                if len(chosen) >= limit:
                    break
        if len(chosen) >= limit:
            break
    return [stride_episode(read_episode(p, k), frame_skip, f"{Path(p).name}:{k}") for p, k in chosen]


def synthetic_episodes(num: int, seed: int, frame_size: int, chunk_len: int, lap_chunks: int) -> list[EvalEpisode]:
    """Two-lap panning loops: the second lap revisits the first (``envs.synthetic.loop_episode``)."""
    from envs.synthetic import loop_episode

    return [stride_episode(loop_episode(seed * 10_007 + i, lap_chunks, laps=2, frame_size=frame_size,
                                        chunk_len=chunk_len), 1, f"synthetic:{seed * 10_007 + i}")
            for i in range(num)]


# -------------------------------------------------------------------------------------------- models
def load_model(spec: str, device: torch.device, seed: int, text_cache: str | None = None):
    """A model folder, 'default' (the shipped model) or a preset name (random weights, seeded)."""
    import worldmodel
    from worldmodel import PRESETS, SlowFastVGen

    if spec in PRESETS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SlowFastVGen.from_preset(spec)
        model = model.to(device).eval()
    else:
        folder = Path(worldmodel.__file__).resolve().parent / "weights" / "default" if spec == "default" else Path(spec)
        if not folder.is_dir():
            raise FileNotFoundError(f"model {spec!r} is neither a preset ({sorted(PRESETS)}), 'default', nor a folder")
        model = SlowFastVGen.from_pretrained(folder, device=device)
    if text_cache:
        from safetensors.torch import load_file

        model.action_encoder.load_text_cache(load_file(text_cache))
    return model


def check_compatible(model, episodes: Sequence[EvalEpisode], what: str) -> None:
    cfg = model.config
    shape = episodes[0].frames.shape[1:]
    if shape != (cfg.frame_size, cfg.frame_size, 3):
        raise ValueError(f"{what} makes {cfg.frame_size}x{cfg.frame_size} frames but the episodes have {shape}")
    if cfg.action_type in ("vector", "both") and episodes[0].actions.shape[-1] != cfg.action_dim:
        raise ValueError(f"{what} takes {cfg.action_dim}-d action vectors but the episodes have "
                         f"{episodes[0].actions.shape[-1]}-d ones")
    if cfg.action_type in ("text", "both"):
        texts = sorted({t for e in episodes for t in e.language})
        try:
            model.action_encoder.embed_texts(texts)
        except (ImportError, OSError) as err:
            raise RuntimeError(f"{what}: cannot embed the episodes' instructions ({err}); pass --text-cache PATH "
                               "(see `python -m experiments.text_cache`)") from err


def variant_config(name: str, model, overrides: dict[str, Any]):
    """The Temp-LoRA config of a variant (None: no Temp-LoRA): the model's, with the command line's
    ``overrides`` (steps, lr, objective) and the variant's learning rule."""
    if name == "no_temp_lora":
        return None
    rule = {"full": "local", "no_chunk_input": "local", "no_local_rule": "full_sequence", "original": "original"}[name]
    return dataclasses.replace(model.config.temp_lora, **overrides, variant=rule)


class EpisodeMemory:
    """One variant's Temp-LoRA for a batch of episodes: the peft ``TempLoRA`` (``single``, batch 1) or
    per-episode factors (``BatchedTempLoRA``); ``config`` None means no Temp-LoRA."""

    def __init__(self, model, config, seeds: Sequence[int], single=None):
        self.config, self.single, self.batched, self.model = config, None, None, model
        if config is None:
            if single is not None:  # Θ = 0 and adapters off: exactly Φ
                single.reset()
                single.set_enabled(False)
            return
        if single is not None:
            if len(seeds) != 1:
                raise ValueError("the peft TempLoRA path rolls out one episode at a time")
            single.config = config
            torch.manual_seed(seeds[0])
            single.set_enabled(True)
            single.reset()
            self.single = single
        else:
            from worldmodel.batched_lora import BatchedTempLoRA

            self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
            self.batched = BatchedTempLoRA(model, len(seeds), config)
            self.batched.reset(generators=self.generators)

    @property
    def active(self) -> bool:
        return self.config is not None

    def generate(self, ctx_lat: torch.Tensor, action: Any, steps: int | None,
                 generator: torch.Generator) -> torch.Tensor:
        if self.batched is not None:
            with self.batched.applied():
                return self.model.generate_latents(ctx_lat, action, steps=steps, generator=generator)
        return self.model.generate_latents(ctx_lat, action, steps=steps, generator=generator, memory=self.single)

    def update(self, chunk) -> None:
        if self.single is not None:
            with torch.enable_grad():
                self.single.update(chunk)
        elif self.batched is not None:
            self.batched.update(chunk, generators=self.generators)

    def rollbacks(self) -> list[int]:
        if self.single is not None:
            return [self.single.rollbacks]
        if self.batched is not None:
            return list(self.batched.rollbacks)
        return []


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _action(model, texts: list[str], vectors: np.ndarray) -> Any:
    kind = model.config.action_type
    if kind == "text":
        return texts
    vec = torch.from_numpy(np.ascontiguousarray(vectors, np.float32))
    return vec if kind == "vector" else {"text": texts, "vector": vec}


@dataclass
class Rollout:
    videos: list[np.ndarray]  # per episode, uint8 (T, H, W, 3); frame 0 is the real start frame
    update_s: list[float] = field(default_factory=list)  # per update call (the whole batch)
    generate_s: list[float] = field(default_factory=list)  # per chunk call (the whole batch)
    rollbacks: list[int] = field(default_factory=list)


@torch.no_grad()
def rollout(model, memory: EpisodeMemory, episodes: Sequence[EvalEpisode], mode: str, steps: int | None,
            generator: torch.Generator, on_chunk: Callable[[], None] | None = None) -> Rollout:
    """Generate every episode of the batch chunk after chunk (see the module docstring for the modes)."""
    from worldmodel import Chunk
    from worldmodel.model import pad_context

    cfg, device = model.config, model.device
    tc, tn = cfg.context_frames, cfg.new_frames
    n_chunks = max(e.num_model_chunks(tn) for e in episodes)

    def real(lo: int, hi: int) -> torch.Tensor:  # (B, hi-lo, H, W, 3), indices clamped to each episode
        return torch.from_numpy(np.stack([e.frames[np.clip(np.arange(lo, hi), 0, len(e.frames) - 1)]
                                          for e in episodes]))

    pieces: list[list[np.ndarray]] = [[e.frames[:1]] for e in episodes]
    out = Rollout([])
    ctx_lat = model.encode_frames(pad_context(real(0, 1), tc)) if mode == "free" else None
    for c in range(n_chunks):
        start = 1 + c * tn
        if mode == "teacher":
            ctx_lat = model.encode_frames(real(start - tc, start))
        acts = [e.chunk_action(c, tn) for e in episodes]
        action = _action(model, [a[0] for a in acts], np.stack([a[1] for a in acts]))
        _sync(device)
        t0 = time.perf_counter()
        new = memory.generate(ctx_lat, action, steps, generator)
        frames = model.decode_latents(new)
        _sync(device)
        out.generate_s.append(time.perf_counter() - t0)
        frames_np = frames.cpu().numpy()
        for b in range(len(episodes)):
            pieces[b].append(frames_np[b])
        latents = torch.cat([ctx_lat, new], dim=2)
        if memory.active:
            if mode == "teacher":
                truth = real(start, start + tn)
                chunk = Chunk(truth, torch.cat([ctx_lat, model.encode_frames(truth)], dim=2), tc)
            else:
                chunk = Chunk(frames, latents, tc)
            _sync(device)
            t0 = time.perf_counter()
            memory.update(chunk)
            _sync(device)
            out.update_s.append(time.perf_counter() - t0)
        if mode == "free":
            ctx_lat = latents[:, :, -tc:]
        if on_chunk is not None:
            on_chunk()
    out.videos = [np.concatenate(p)[: len(e.frames)] for p, e in zip(pieces, episodes)]
    out.rollbacks = memory.rollbacks()
    return out


# ------------------------------------------------------------------------------------------- metrics
class Scorer:
    """Per-episode metrics plus FVD feature accumulation; unavailable metrics leave a note."""

    def __init__(self, args: argparse.Namespace, device: torch.device, notes: list[str]):
        from worldmodel import metrics

        self.m = metrics
        self.fvd_frames = args.fvd_frames
        self.fvd = self.lpips = None
        try:
            self.fvd = metrics.FrechetVideoDistance(args.i3d, device=device)
        except metrics.MetricUnavailable as err:
            notes.append(str(err))
        try:
            self.lpips = metrics.LPIPS(args.lpips, device=device)
        except metrics.MetricUnavailable as err:
            notes.append(str(err))
        if args.src_features:
            self.features: Any = metrics.load_feature_model(args.src_features, device=device)
            self.features_name = "user features (--src-features)"
        else:
            self.features = metrics.pixel_features
            self.features_name = "offline pixel stand-in (not the paper's ResNet-18; pass --src-features)"
        self.real_feats: list[np.ndarray] = []
        self.fake_feats: dict[str, list[np.ndarray]] = {}

    def clips(self, video: np.ndarray) -> list[np.ndarray]:
        f = self.fvd_frames
        return [video[1 + k * f: 1 + (k + 1) * f] for k in range((len(video) - 1) // f)]

    def score(self, video: np.ndarray, episode: EvalEpisode) -> dict[str, float]:
        m = self.m
        out = {"scuts": float(m.scene_cuts(video)), "src": float("nan")}
        if len(episode.revisits):
            out["src"] = m.scene_revisit_consistency(video, episode.revisits, self.features)
        out.update(self.fidelity(video, episode))
        gen, real = video[1:], episode.frames[1:]
        out["lpips"] = 100.0 * self.lpips(gen, real) if self.lpips is not None else float("nan")
        return out

    def fidelity(self, video: np.ndarray, episode: EvalEpisode) -> dict[str, float]:
        """PSNR/SSIM against the real video on all generated frames and on the revisiting frames alone
        (the later frame j of each revisit pair: where memory should help)."""
        m, out = self.m, {}
        out["psnr"] = m.psnr(video[1:], episode.frames[1:])
        out["ssim"] = 100.0 * m.ssim(video[1:], episode.frames[1:])
        later = np.unique(episode.revisits[:, 1])
        later = later[later >= 1]
        out["psnr_revisit"] = m.psnr(video[later], episode.frames[later]) if len(later) else float("nan")
        out["ssim_revisit"] = 100.0 * m.ssim(video[later], episode.frames[later]) if len(later) else float("nan")
        return out

    def add_fvd(self, key: str, video: np.ndarray) -> None:
        if self.fvd is None:
            return
        clips = self.clips(video)
        if clips:
            self.fake_feats.setdefault(key, []).append(self.fvd.features(clips))

    def add_real_fvd(self, episode: EvalEpisode) -> None:
        if self.fvd is not None and self.clips(episode.frames):
            self.real_feats.append(self.fvd.features(self.clips(episode.frames)))

    def fvd_value(self, key: str) -> tuple[float, str | None]:
        if self.fvd is None:
            return float("nan"), None
        if not self.fake_feats.get(key) or not self.real_feats:
            return float("nan"), f"FVD: no episode has {self.fvd_frames} generated frames (lower --fvd-frames)"
        real, fake = np.concatenate(self.real_feats), np.concatenate(self.fake_feats[key])
        if len(real) < 2 or len(fake) < 2:
            return float("nan"), "FVD needs at least 2 clips per set"
        m = self.m
        return m.frechet_distance(*m.gaussian_statistics(real), *m.gaussian_statistics(fake)), None


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """Mean ± std over the finite values; ``n_inf`` counts infinite ones (PSNR of an exact copy), which
    would otherwise make the mean infinite."""
    vals = np.asarray([v for v in values if not math.isnan(v)], np.float64)
    finite = vals[np.isfinite(vals)]
    n_inf = int(vals.size - finite.size)
    if finite.size == 0:
        return {"mean": float("inf") if n_inf else float("nan"), "std": float("nan"), "n": int(vals.size),
                "n_inf": n_inf}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "n": int(vals.size), "n_inf": n_inf}


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return _jsonable(x.item())
    return x


# ---------------------------------------------------------------------------------------------- video
def _caption_tile(frame: np.ndarray, lines: list[str], scale: int) -> np.ndarray:
    big = frame.repeat(scale, 0).repeat(scale, 1)
    line_h = 12
    band = np.zeros((line_h * len(lines) + 4, big.shape[1], 3), np.uint8)
    try:
        from PIL import Image, ImageDraw, ImageFont

        img = Image.fromarray(band)
        draw, font = ImageDraw.Draw(img), ImageFont.load_default()
        for i, line in enumerate(lines):
            draw.text((3, 2 + i * line_h), line, fill=(255, 255, 255), font=font)
        band = np.asarray(img)
    except ImportError:  # pragma: no cover - captions need PIL; the grid works without them
        pass
    return np.concatenate([big, band], axis=0)


def grid_frames(episode: EvalEpisode, videos: dict[str, np.ndarray], new_frames: int,
                scale: int) -> list[np.ndarray]:
    """Real video beside every variant, captioned with name, frame index, context/generated and revisits."""
    revisit_of = {int(j): int(i) for i, j in episode.revisits}
    columns = {"real video": episode.frames, **{SHORT[k]: v for k, v in videos.items()}}
    out = []
    for t in range(len(episode.frames)):
        status = "start (real)" if t == 0 else f"chunk {(t - 1) // new_frames + 1}"  # model chunks
        mark = f"revisits t={revisit_of[t]}" if t in revisit_of else ""
        tiles = [_caption_tile(v[t], [name[:24], f"t={t} {status}", mark], scale) for name, v in columns.items()]
        sep = np.full((tiles[0].shape[0], 2, 3), 128, np.uint8)
        row = np.concatenate([x for tile in tiles for x in (tile, sep)][:-1], axis=1)
        out.append(np.pad(row, ((0, row.shape[0] % 2), (0, row.shape[1] % 2), (0, 0))))  # even sizes for x264
    return out


def write_grid(path: Path, frames: list[np.ndarray], fps: int, notes: list[str]) -> str | None:
    """mp4 with moviepy; without moviepy a PNG sheet of 8 frames (PIL) instead, else nothing (a note)."""
    try:
        from moviepy import ImageSequenceClip
    except ImportError:
        try:
            from PIL import Image
        except ImportError:
            notes.append("grid video skipped: neither moviepy nor PIL is installed")
            return None
        sheet = np.concatenate(frames[:: max(1, len(frames) // 8)][:8], axis=0)
        png = path.with_suffix(".png")
        Image.fromarray(sheet).save(png)
        notes.append("moviepy is not installed: the grid is a PNG sheet of 8 frames")
        return png.name
    ImageSequenceClip(frames, fps=fps).write_videofile(str(path), codec="libx264", audio=False, logger=None)
    return path.name


# ---------------------------------------------------------------------------------------------- table
def fmt(stat: dict | float | None, digits: int = 2) -> str:
    if stat is None:
        return "–"
    if isinstance(stat, dict):
        mean, std = stat["mean"], stat["std"]
        if stat["n"] == 0 or (isinstance(mean, float) and math.isnan(mean)):
            return "–"
        if math.isinf(mean):
            return "inf"
        text = f"{mean:.{digits}f} ± {std:.{digits}f}" if stat["n"] > 1 else f"{mean:.{digits}f}"
        return text + (f" (+{stat['n_inf']} inf)" if stat.get("n_inf") else "")
    if isinstance(stat, float) and (math.isnan(stat)):
        return "–"
    return f"{stat:.{digits}f}"


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# Table 2: SlowFast-VGen ablations on held-out memory episodes",
        "",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']}",
        f"- date: {result['date']}",
        *([f"- videos generated by `{g['command']}` on {g['machine']}, {g['date']}"]
          if (g := result["generation"])["command"] != result["command"] else []),
        f"- model: `{s['model']}`; data: `{s['data']}` ({result['num_episodes']} episodes; tasks: "
        f"{', '.join(s['tasks']) if s['tasks'] else 'all'})",
        f"- rollout: {s['mode']}; denoising steps: {s['steps']}; Temp-LoRA steps per chunk: {s['temp_lora_steps']}, "
        f"lr {s.get('temp_lora_lr', '?')}, objective {s.get('temp_lora_objective', '?')}; "
        f"frame skip: {s['frame_skip']}; batch: {s['batch']}; seed: {s['seed']}",
        "",
        "| variant | SCuts ↓ | SRC ↑ | PSNR ↑ | SSIM ↑ | revisit PSNR ↑ | revisit SSIM ↑ | LPIPS ↓ | FVD ↓ "
        "| fast update (ms/call) | generation (ms/chunk) | episodes | paper SCuts / SRC |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["variants"].items():
        paper = "{} / {}".format(*PAPER[name])
        if "skipped" in row:
            lines.append(f"| {row['label']} | skipped¹ | | | | | | | | | | 0 | {paper} |")
            continue
        mtr = row["metrics"]
        fvd = "n/a²" if row["fvd"] is None else fmt(row["fvd"], 1)
        lpips = "n/a³" if row["lpips_unavailable"] else fmt(mtr["lpips"])
        upd = fmt(row["fast_update_ms"], 1) if row["fast_update_ms"] is not None else "–"
        lines.append(f"| {row['label']} | {fmt(mtr['scuts'])} | {fmt(mtr['src'])} | {fmt(mtr['psnr'])} | "
                     f"{fmt(mtr['ssim'])} | {fmt(mtr['psnr_revisit'])} | {fmt(mtr['ssim_revisit'])} | {lpips} | "
                     f"{fvd} | {upd} | {fmt(row['generate_ms'], 1)} | {row['episodes']} | {paper} |")
    ref, cp = result["reference"], result["copy_last_frame"]
    lines.append(f"| real video (reference) | {fmt(ref['scuts'])} | {fmt(ref['src'])} | – | – | – | – | – | – | – | "
                 f"– | {ref['scuts']['n']} | |")
    lines.append(f"| copy last given frame (no model) | – | – | {fmt(cp['psnr'])} | {fmt(cp['ssim'])} | "
                 f"{fmt(cp['psnr_revisit'])} | {fmt(cp['ssim_revisit'])} | – | – | – | – | {cp['psnr']['n']} | |")
    lines += ["", "Notes:", ""]
    skipped = [r["skipped"] for r in result["variants"].values() if "skipped" in r]
    lines += [f"- ¹ {n}" for n in skipped]
    lines += [f"- ² {n}" for n in result["notes"] if n.startswith("FVD")]
    lines += [f"- ³ {n}" for n in result["notes"] if n.startswith("LPIPS")]
    lines += [f"- {n}" for n in result["notes"] if not n.startswith(("FVD", "LPIPS"))]
    lines += [
        f"- SRC features: {result['src_features']}.",
        "- Mean ± std over episodes. SSIM, LPIPS and SRC are x100 as in the paper; PSNR in dB; PSNR, SSIM, LPIPS "
        "and FVD compare generated frames only with the real ones (the start frame is real and excluded); revisit "
        "PSNR/SSIM use only the revisiting frame of each recorded revisit pair.",
        "- Copy last given frame: every chunk repeats the last real frame the model is given (teacher mode: the "
        "frame before the chunk; free mode: the start frame); a model must beat it to have learned dynamics.",
        f"- FVD over clips of {s['fvd_frames']} generated frames; a fast update call updates the memories of a "
        f"whole batch ({s['batch']} episode(s)); generation time covers sampling + decoding of one chunk call.",
        "- The paper column is SlowFast-VGen's own numbers (ResNet-18 SRC, its data); they are not comparable "
        "in absolute terms, only the ordering is.",
    ]
    rolled = {r["label"]: r["temp_lora_rollbacks"] for r in result["variants"].values() if r.get("temp_lora_rollbacks")}
    if rolled:
        lines.append("- Temp-LoRA rollbacks (non-finite or exploding fast loss): "
                     + ", ".join(f"{k}: {v}" for k, v in rolled.items()) + ".")
    if result.get("video"):
        lines.append(f"- Grid video: `{result['video']}` (episode {result['video_episode']}).")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default",
                   help="model folder (save_pretrained), 'default' (the shipped model) or a preset name "
                        "(random weights)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="h5 episode file or folder of held-out episodes")
    src.add_argument("--synthetic", action="store_true", help="two-lap synthetic panning loops instead of --data")
    p.add_argument("--episodes", type=int, default=50, help="episodes to evaluate (default 50)")
    p.add_argument("--tasks", default=",".join(MEMORY_TASKS),
                   help="comma-separated episode tasks to keep, or 'all' (default: the memory tasks)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--mode", choices=MODES, default="free", help="free-running or teacher-forced rollout")
    p.add_argument("--no-chunk-model", default=None, help="model folder trained with context_frames=1")
    p.add_argument("--steps", type=int, default=None, help="denoising steps per chunk (default: the model's)")
    p.add_argument("--temp-lora-steps", type=int, default=None, help="fast steps per chunk (default: the model's)")
    p.add_argument("--temp-lora-lr", type=float, default=None, help="fast learning rate (default: the model's)")
    p.add_argument("--temp-lora-objective", choices=("conditional", "joint"), default=None,
                   help="fast learning objective (default: the model's)")
    p.add_argument("--frame-skip", type=int, default=1, help="stride over the stored frames (as in training)")
    p.add_argument("--batch", type=int, default=1, help="episodes rolled out together (each with its own memory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--i3d", default=None, help="I3D TorchScript file for FVD (never downloaded)")
    p.add_argument("--lpips", default=None, help="LPIPS TorchScript file (never downloaded)")
    p.add_argument("--src-features", default=None, help="SRC image features: TorchScript or ResNet-18 state dict")
    p.add_argument("--fvd-frames", type=int, default=16, help="frames per FVD clip")
    p.add_argument("--text-cache", default=None, help="safetensors of instruction embeddings (no text model needed)")
    p.add_argument("--synthetic-lap-chunks", type=int, default=4, help="chunks per lap of a synthetic loop")
    p.add_argument("--video-episode", type=int, default=0, help="index of the episode shown in the grid video")
    p.add_argument("--video-fps", type=int, default=4)
    p.add_argument("--no-video", action="store_true", help="skip the grid video")
    p.add_argument("--save-videos", action="store_true",
                   help="also save the generated videos (OUT/videos/*.npz + rollout.json) for --from-videos; "
                        "automatic when the metrics' packages (scenedetect, scikit-image) are missing")
    p.add_argument("--from-videos", default=None, metavar="DIR",
                   help="score videos saved by --save-videos (no model needed; the episodes are re-read from "
                        "--data, or the synthetic settings of that run)")
    p.add_argument("--time-limit-min", type=float, default=None,
                   help="stop starting new batches after this many minutes (the table says how many ran)")
    p.add_argument("--out", default="runs/evaluate", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if not (args.data or args.synthetic or args.from_videos):
        p.error("pass --data PATH or --synthetic (or --from-videos DIR)")
    args.variant_list = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variant_list if v not in VARIANTS]
    if unknown or not args.variant_list:
        p.error(f"unknown variant(s) {unknown or args.variants!r}; valid variants: {', '.join(VARIANTS)}")
    args.variant_list = [v for v in VARIANTS if v in args.variant_list]  # table order
    for name in ("episodes", "batch", "fvd_frames", "frame_skip", "synthetic_lap_chunks"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be >= 1")
    if args.temp_lora_steps is not None and args.temp_lora_steps < 0:
        p.error("--temp-lora-steps must be >= 0")
    if args.temp_lora_lr is not None and not args.temp_lora_lr > 0:
        p.error("--temp-lora-lr must be > 0")
    args.temp_lora = {k: v for k, v in (("steps", args.temp_lora_steps), ("lr", args.temp_lora_lr),
                                        ("objective", args.temp_lora_objective)) if v is not None}
    args.task_list = None if args.tasks.strip() == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    return args


def load_episodes(args: argparse.Namespace, frame_size: int, new_frames: int,
                  notes: list[str]) -> tuple[list[EvalEpisode], str, list[str] | None]:
    if args.synthetic:
        episodes = synthetic_episodes(args.episodes, args.seed, frame_size, new_frames, args.synthetic_lap_chunks)
        return episodes, "synthetic loops (envs.synthetic.loop_episode)", ["panning"]
    episodes = load_h5_episodes(args.data, args.task_list, args.episodes, args.frame_skip)
    if not episodes:
        raise SystemExit(f"no episodes with tasks {args.task_list} in {args.data!r}")
    if len(episodes) < args.episodes:
        notes.append(f"only {len(episodes)} episodes matched (asked for {args.episodes})")
    return episodes, args.data, args.task_list


class Collector:
    """Takes each episode's generated videos: scores them (when the metrics can run here) and/or saves
    them for ``--from-videos``; keeps the grid episode's videos."""

    def __init__(self, scorer: Scorer | None, save_dir: Path | None, grid_index: int, mode: str, new_frames: int):
        self.scorer, self.save_dir, self.grid_index = scorer, save_dir, grid_index
        self.mode, self.new_frames = mode, new_frames
        self.per_episode: list[dict] = []
        self.reference: dict[str, list[float]] = {"scuts": [], "src": []}
        self.copy_baseline: dict[str, list[float]] = {"psnr": [], "ssim": [], "psnr_revisit": [], "ssim_revisit": []}
        self.grid: dict[str, np.ndarray] = {}
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)

    def add(self, index: int, ep: EvalEpisode, videos: dict[str, np.ndarray]) -> None:
        if self.save_dir is not None:
            np.savez_compressed(self.save_dir / f"episode_{index:05d}.npz", name=np.array(ep.name),
                                **{f"video_{v}": video for v, video in videos.items()})
        if index == self.grid_index:
            self.grid = dict(videos)
        sc = self.scorer
        if sc is None:
            return
        self.reference["scuts"].append(float(sc.m.scene_cuts(ep.frames)))
        if len(ep.revisits):
            self.reference["src"].append(sc.m.scene_revisit_consistency(ep.frames, ep.revisits, sc.features))
        for k, value in sc.fidelity(copy_last_frame(ep.frames, self.mode, self.new_frames), ep).items():
            self.copy_baseline[k].append(value)
        sc.add_real_fvd(ep)
        for v in VARIANTS:
            if v in videos:
                sc.add_fvd(v, videos[v])
                self.per_episode.append({"episode": ep.name, "task": ep.task, "variant": v,
                                         **sc.score(videos[v], ep)})


def copy_last_frame(frames: np.ndarray, mode: str, new_frames: int) -> np.ndarray:
    """The no-model baseline: every chunk repeats the last real frame the model was given (teacher mode:
    the frame before the chunk; free mode: the start frame)."""
    t = np.arange(len(frames))
    source = np.maximum(t - 1, 0) // new_frames * new_frames if mode == "teacher" else np.zeros_like(t)
    return frames[source]


def generate(args: argparse.Namespace, model, no_chunk, episodes: list[EvalEpisode], variants: list[str],
             device: torch.device, collector: Collector, started: float, notes: list[str]) -> dict:
    """Roll out every variant on every episode (in batches); returns timings, rollbacks and what ran."""
    from tqdm.auto import tqdm

    model_of = {v: (no_chunk if v == "no_chunk_input" else model) for v in variants}
    singles: dict[int, Any] = {}  # one peft TempLoRA per model (batch 1); variants swap its config
    if args.batch == 1:
        from worldmodel import TempLoRA

        for v in variants:
            m = model_of[v]
            if v != "no_temp_lora" and id(m) not in singles:
                singles[id(m)] = TempLoRA(m, variant_config("full", m, args.temp_lora))
    times: dict[str, dict[str, list[float]]] = {v: {"update": [], "generate": []} for v in variants}
    rollbacks = {v: 0 for v in variants}
    new_frames = model.config.new_frames
    order = sorted(range(len(episodes)), key=lambda i: (episodes[i].num_model_chunks(new_frames), i))
    batches = [order[i: i + args.batch] for i in range(0, len(order), args.batch)]
    total = sum(max(episodes[i].num_model_chunks(model_of[v].config.new_frames) for i in b)
                for b in batches for v in variants)
    done: list[int] = []
    bar = tqdm(total=total, desc="evaluate", unit="chunk", disable=args.quiet, file=sys.stderr)
    for batch in batches:
        if args.time_limit_min is not None and time.perf_counter() - started > 60 * args.time_limit_min:
            notes.append(f"time limit reached: {len(done)} of {len(episodes)} episodes evaluated")
            break
        group = [episodes[i] for i in batch]
        videos: dict[int, dict[str, np.ndarray]] = {i: {} for i in batch}
        for v in variants:
            m = model_of[v]
            seeds = [args.seed * 1_000_003 + i for i in batch]
            memory = EpisodeMemory(m, variant_config(v, m, args.temp_lora), seeds, singles.get(id(m)))
            gen = torch.Generator(device=device).manual_seed(args.seed * 1_000_003 + batch[0])
            bar.set_postfix_str(v)
            res = rollout(m, memory, group, args.mode, args.steps, gen, on_chunk=lambda: bar.update(1))
            del memory
            times[v]["update"] += res.update_s
            times[v]["generate"] += res.generate_s
            rollbacks[v] += sum(res.rollbacks)
            for i, video in zip(batch, res.videos):
                videos[i][v] = video
        for i in batch:
            collector.add(i, episodes[i], videos[i])
        done += batch
    bar.close()
    return {"times": times, "rollbacks": rollbacks, "done": sorted(done)}


def load_saved(args: argparse.Namespace) -> dict:
    """rollout.json of a --save-videos run; the episode selection settings are taken from it."""
    folder = Path(args.from_videos)
    meta_file = folder / "rollout.json"
    if not meta_file.is_file():
        raise SystemExit(f"--from-videos {str(folder)!r}: no rollout.json (write it with --save-videos)")
    meta = json.loads(meta_file.read_text())
    s = meta["settings"]
    args.synthetic = s["data"].startswith("synthetic")
    if not args.synthetic:
        args.data = args.data or s["data"]
    args.task_list = s["tasks"] if not args.synthetic else None
    for key in ("episodes", "frame_skip", "seed", "synthetic_lap_chunks", "mode", "batch"):
        setattr(args, key, s[key])
    return meta


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    started = time.perf_counter()
    notes: list[str] = []
    out = Path(args.out)
    command = command_line("experiments.evaluate", argv)
    here = {"command": command, "machine": machine_name(device), "date": utc_date()}
    try:
        import worldmodel.metrics  # noqa: F401  (scenedetect, scikit-image, scipy)

        metrics_error = None
    except ImportError as err:
        metrics_error = f"{type(err).__name__}: {err}"
        if args.from_videos:
            raise SystemExit(f"cannot score here: {metrics_error}")
        args.save_videos = True

    saved = load_saved(args) if args.from_videos else None
    rows: dict[str, dict] = {}
    if saved is None:
        model = load_model(args.model, device, args.seed, args.text_cache)
        cfg = model.config
        settings = {"model": args.model, "no_chunk_model": args.no_chunk_model, "mode": args.mode,
                    "steps": args.steps or cfg.sample_steps,
                    "temp_lora_steps": args.temp_lora.get("steps", cfg.temp_lora.steps),
                    "temp_lora_lr": args.temp_lora.get("lr", cfg.temp_lora.lr),
                    "temp_lora_objective": args.temp_lora.get("objective", cfg.temp_lora.objective), "frame_skip": args.frame_skip, "batch": args.batch, "seed": args.seed,
                    "episodes": args.episodes, "synthetic_lap_chunks": args.synthetic_lap_chunks,
                    "context_frames": cfg.context_frames, "new_frames": cfg.new_frames, "frame_size": cfg.frame_size}
        episodes, settings["data"], settings["tasks"] = load_episodes(args, cfg.frame_size, cfg.new_frames, notes)
        check_compatible(model, episodes, "the model")
        no_chunk = None
        variants = list(args.variant_list)
        if "no_chunk_input" in variants:
            if args.no_chunk_model:
                no_chunk = load_model(args.no_chunk_model, device, args.seed, args.text_cache)
                if no_chunk.config.context_frames != 1:
                    raise SystemExit(f"--no-chunk-model must condition on one frame (context_frames=1); "
                                     f"{args.no_chunk_model!r} has context_frames={no_chunk.config.context_frames}")
                check_compatible(no_chunk, episodes, "--no-chunk-model")
            else:
                rows["no_chunk_input"] = {"label": LABELS["no_chunk_input"], "skipped": NO_CHUNK_NOTE}
                variants.remove("no_chunk_input")
        temp_lora = {v: (dataclasses.asdict(c) if (c := variant_config(
            v, no_chunk if v == "no_chunk_input" else model, args.temp_lora)) is not None else None)
            for v in variants}
        grid_index = min(args.video_episode, len(episodes) - 1)
        scorer = Scorer(args, device, notes) if metrics_error is None else None
        save_dir = out / "videos" if args.save_videos else None
        collector = Collector(scorer, save_dir, grid_index, args.mode, cfg.new_frames)
        gen = generate(args, model, no_chunk, episodes, variants, device, collector, started, notes)
        generation = dict(here)
        if save_dir is not None:
            meta = {**here, "settings": settings, "variants": variants, "temp_lora": temp_lora, "skipped": rows,
                    "notes": list(notes), **gen}
            (save_dir / "rollout.json").write_text(json.dumps(_jsonable(meta), indent=1))
        if scorer is None:
            print(f"the metrics cannot run here ({metrics_error}); generated videos saved in {save_dir}: score them "
                  f"with `python -m experiments.evaluate --from-videos {save_dir} --out {out}` where scenedetect "
                  "and scikit-image are installed", file=sys.stderr)
            return {"videos": str(save_dir), "generation": gen, "metrics_error": metrics_error}
    else:
        settings = saved["settings"]
        notes += [n for n in saved["notes"] if not n.startswith(("FVD", "LPIPS"))]
        episodes, _, _ = load_episodes(args, settings["frame_size"], settings["new_frames"], [])
        variants, temp_lora, rows = saved["variants"], saved["temp_lora"], dict(saved["skipped"])
        gen = saved
        generation = {k: saved[k] for k in ("command", "machine", "date")}
        grid_index = min(args.video_episode, len(episodes) - 1)
        scorer = Scorer(args, device, notes)
        collector = Collector(scorer, None, grid_index, settings["mode"], settings["new_frames"])
        folder = Path(args.from_videos)
        for i in tqdm_list(saved["done"], args.quiet):
            if i >= len(episodes):
                raise SystemExit(f"saved episode {i} is beyond the {len(episodes)} episodes found; pass the --data "
                                 "of the generating run")
            with np.load(folder / f"episode_{i:05d}.npz") as f:
                if str(f["name"]) != episodes[i].name:
                    raise SystemExit(f"saved episode {i} is {str(f['name'])!r} but the data gives "
                                     f"{episodes[i].name!r}; pass the --data of the generating run")
                collector.add(i, episodes[i], {v: f[f"video_{v}"] for v in variants})

    for v in variants:
        recs = [r for r in collector.per_episode if r["variant"] == v]
        fvd, fvd_note = scorer.fvd_value(v)
        if fvd_note and fvd_note not in notes:
            notes.append(fvd_note)
        upd, gen_s = gen["times"][v]["update"], gen["times"][v]["generate"]
        rows[v] = {
            "label": LABELS[v],
            "metrics": {k: summarize([r[k] for r in recs]) for k in METRICS},
            "fvd": None if scorer.fvd is None else fvd,
            "lpips_unavailable": scorer.lpips is None,
            "fast_update_ms": 1000 * float(np.mean(upd)) if upd else None,
            "generate_ms": 1000 * float(np.mean(gen_s)) if gen_s else float("nan"),
            "temp_lora_rollbacks": gen["rollbacks"][v],
            "episodes": len(recs),
            "temp_lora": temp_lora[v],
        }
    rows = {v: rows[v] for v in VARIANTS if v in rows}

    out.mkdir(parents=True, exist_ok=True)
    video_name = None
    if not args.no_video and collector.grid:
        frames = grid_frames(episodes[grid_index], {v: collector.grid[v] for v in VARIANTS if v in collector.grid},
                             settings["new_frames"], scale=max(1, 128 // settings["frame_size"]))
        video_name = write_grid(out / "table2_grid.mp4", frames, args.video_fps, notes)
    result = {
        **here,
        "generation": generation,
        "device": str(device),
        "torch": torch.__version__,
        "settings": {**settings, "fvd_frames": args.fvd_frames},
        "num_episodes": len(gen["done"]),
        "variants": rows,
        "reference": {k: summarize(v) for k, v in collector.reference.items()},
        "copy_last_frame": {k: summarize(v) for k, v in collector.copy_baseline.items()},
        "src_features": scorer.features_name,
        "notes": notes,
        "video": video_name,
        "video_episode": episodes[grid_index].name if video_name else None,
        "seconds": round(time.perf_counter() - started, 1),
        "per_episode": collector.per_episode,
    }
    (out / "table2.json").write_text(json.dumps(_jsonable(result), indent=1))
    table = markdown(result)
    (out / "table2.md").write_text(table)
    print(table)
    print(f"wrote {out / 'table2.json'}, {out / 'table2.md'}" + (f", {out / video_name}" if video_name else ""),
          file=sys.stderr)
    return result


def tqdm_list(items: list, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc="score", unit="episode", disable=quiet, file=sys.stderr)


if __name__ == "__main__":
    main()

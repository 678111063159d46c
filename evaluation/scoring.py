"""Per-episode scores of generated videos against the real ones, and their summaries."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .episodes import EvalEpisode, out_of_context_revisits, teacher_chunks
from .report import VARIANTS


class Scorer:
    """Per-episode metrics plus FVD feature accumulation; unavailable metrics leave a note."""

    def __init__(self, fvd_frames: int, i3d: str | None, lpips: str | None, src_features: str | None,
                 device: torch.device, notes: list[str], chunk_frames: tuple[int, int] | None = None):
        """Weights of I3D (FVD), LPIPS and SRC features come from local files; a missing one leaves a note.
        ``chunk_frames`` = the model's (context_frames, new_frames): which revisits are out of context."""
        from evaluation import metrics

        self.m = metrics
        self.chunk_frames = chunk_frames
        self.fvd_frames = fvd_frames
        self.fvd = self.lpips = None
        try:
            self.fvd = metrics.FrechetVideoDistance(i3d, device=device)
        except metrics.MetricUnavailable as err:
            notes.append(str(err))
        try:
            self.lpips = metrics.LPIPS(lpips, device=device)
        except metrics.MetricUnavailable as err:
            notes.append(str(err))
        if src_features:
            self.features: Any = metrics.load_feature_model(src_features, device=device)
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
        out = {"scuts": float(m.scene_cuts(video)), "src": float("nan"), **cube_probe(video, episode)}
        if len(episode.revisits):
            out["src"] = m.scene_revisit_consistency(video, episode.revisits, self.features)
        out.update(self.fidelity(video, episode))
        gen, real = video[1:], episode.frames[1:]
        out["lpips"] = 100.0 * self.lpips(gen, real) if self.lpips is not None else float("nan")
        return out

    def fidelity(self, video: np.ndarray, episode: EvalEpisode) -> dict[str, float]:
        """PSNR/SSIM against the real video on all generated frames, on the dynamic region alone (the
        pixels whose real value differs from the real start frame: `evaluation.metrics.dynamic_region`)
        and on the revisiting frames alone (the later frame j of each revisit pair: where memory should help)."""
        m, out = self.m, {}
        out["psnr"] = m.psnr(video[1:], episode.frames[1:])
        out["ssim"] = 100.0 * m.ssim(video[1:], episode.frames[1:])
        region = dynamic_region(episode)
        out["psnr_dynamic"] = m.masked_psnr(video[1:], episode.frames[1:], region)
        out["ssim_dynamic"] = 100.0 * m.masked_ssim(video[1:], episode.frames[1:], region)
        later = np.unique(episode.revisits[:, 1])
        later = later[later >= 1]
        out["psnr_revisit"] = m.psnr(video[later], episode.frames[later]) if len(later) else float("nan")
        out["ssim_revisit"] = 100.0 * m.ssim(video[later], episode.frames[later]) if len(later) else float("nan")
        if episode.task == "path_and_return" and self.chunk_frames is not None:
            out["psnr_revisit_terrain"] = crafter_revisit_psnr(video, episode, *self.chunk_frames)
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


def cube_recall(video: np.ndarray, episode: EvalEpisode) -> float:
    """1/0: does the video show the episode's cube, in its colour, where the real one reappears when the
    drawer is reopened (`evaluation.memory_probe`); NaN for episodes without the benchmark's records or
    without a reopen."""
    return cube_probe(video, episode)["cube_recall"]


def cube_probe(video: np.ndarray, episode: EvalEpisode) -> dict:
    """``cube_recall`` (see :func:`cube_recall`), with what the video showed at the reopen, ``cube_seen`` (the
    probe's verdict: a palette colour or "none"; None without a reopen), and the true ``cube_color``: a recall
    below chance is read from them (an empty drawer, or the same wrong colour every time)."""
    if episode.cube is None:
        return {"cube_recall": float("nan")}
    from evaluation import memory_probe

    c = episode.cube
    result = memory_probe.cube_recall(video, c["cube_pixel"], c["sim_state"], c["color"], recorded_width=c["width"])
    recall = float(result["correct"]) if result["label"] is not None else float("nan")
    return {"cube_recall": recall, "cube_seen": result["label"], "cube_color": c["color"]}


def dynamic_region(episode: EvalEpisode) -> np.ndarray:
    """bool (T-1, H, W): the generated frames' pixels whose real value differs from the real start frame
    by more than `evaluation.metrics.DYNAMIC_THRESHOLD` in any channel."""
    from evaluation import metrics

    return metrics.dynamic_region(episode.frames[1:], episode.frames[0])


def crafter_revisit_psnr(video: np.ndarray, episode: EvalEpisode, context_frames: int, new_frames: int) -> float:
    """Crafter's memory measure: PSNR of the revisiting frames whose first visit is out of the model's
    context (`out_of_context_revisits`), over the terrain alone (`envs.real.crafter.terrain_mask`: the
    inventory bar and the player's cell masked, since they change between visits); NaN without such pairs."""
    from envs.real.crafter import terrain_mask

    from .metrics import masked_psnr

    later = np.unique(out_of_context_revisits(episode.revisits, context_frames, new_frames)[:, 1])
    later = later[later < len(video)]
    if not len(later):
        return float("nan")
    mask = np.broadcast_to(terrain_mask(video.shape[1]), (len(later), *video.shape[1:3]))
    return masked_psnr(video[later], episode.frames[later], mask)


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


class Collector:
    """Takes each episode's generated videos: scores them (when the metrics can run here) and/or saves
    them for ``--from-videos``; keeps the grid episode's videos."""

    def __init__(self, scorer: Scorer | None, save_dir: Path | None, grid_index: int, mode: str, new_frames: int):
        self.scorer, self.save_dir, self.grid_index = scorer, save_dir, grid_index
        self.mode, self.new_frames = mode, new_frames
        self.per_episode: list[dict] = []
        self.reference: dict[str, list[float]] = {"scuts": [], "src": [], "cube_recall": [], "dynamic_fraction": []}
        self.copy_baseline: dict[str, list[float]] = {k: [] for k in ("psnr", "ssim", "psnr_dynamic", "ssim_dynamic",
                                                                      "psnr_revisit", "ssim_revisit")}
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
        self.reference["cube_recall"].append(cube_recall(ep.frames, ep))
        self.reference["dynamic_fraction"].append(100.0 * float(dynamic_region(ep).mean()))
        if len(ep.revisits):
            self.reference["src"].append(sc.m.scene_revisit_consistency(ep.frames, ep.revisits, sc.features))
        context = sc.chunk_frames[0] if sc.chunk_frames is not None else 1
        forced = teacher_chunks(ep, self.mode, context, self.new_frames)
        for k, value in sc.fidelity(copy_last_frame(ep.frames, self.new_frames, forced), ep).items():
            self.copy_baseline.setdefault(k, []).append(value)
        sc.add_real_fvd(ep)
        for v in VARIANTS:
            if v in videos:
                sc.add_fvd(v, videos[v])
                self.per_episode.append({"episode": ep.name, "task": ep.task, "variant": v,
                                         **sc.score(videos[v], ep)})


def copy_last_frame(frames: np.ndarray, new_frames: int, forced_chunks: int) -> np.ndarray:
    """The no-model baseline: every chunk repeats the last real frame the model was given: in the first
    ``forced_chunks`` (teacher-forced) chunks the frame before the chunk, after them the last real frame
    (free mode: the start frame)."""
    t = np.arange(len(frames))
    source = np.minimum(np.maximum(t - 1, 0) // new_frames * new_frames, forced_chunks * new_frames)
    return frames[source]

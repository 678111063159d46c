"""How well a model's frozen VAE reconstructs real frames: over the whole frame, its dynamic region and at the cube.

    python -m experiments.vae_check --model default --data runs/eval_small
    python -m experiments.vae_check --model runs/s5/model --data data/scene_eval --every 2 --out vae.json

Everything the world model draws passes through its VAE, so an object the VAE cannot reconstruct (a
cube colour it never saw) cannot be imagined either. The cube error is the mean absolute error (0-255)
over the 3x3 pixels at the cube's recorded image position (`cube_pixel` of scene episodes, frames where
it is at least half visible); episodes without that record count for the whole-frame error only. ``psnr`` and
``dynamic_psnr`` are the round trip's, as `experiments.evaluate` scores generated frames (the dynamic region: the
pixels that differ from the episode's start frame by more than 24/255, the arm, the cube, the drawer).

Colour, as the memory benchmark reads it (`evaluation.memory_probe`), for episodes with a cube colour and the
simulator's state: ``cube_color_accuracy`` is the share of those visible-cube frames whose reconstruction reads as
the episode's colour, and ``reopen_recall`` the benchmark's cube recall at the drawer reopen scored on the
reconstructed real video (episodes with a reopen: ``reopen_episodes``). A model whose generated reopen were the
real one, up to its VAE, would score that recall: it caps what any memory can show.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from envs.episodes import h5_files, list_episodes, read_episode
from envs.real.objects import CUBE_PIXEL_FIELDS
from evaluation.metrics import dynamic_region, masked_psnr, psnr
from worldmodel.loading import load_model


def reconstruct(model, frames: np.ndarray, batch: int = 64) -> np.ndarray:
    """uint8 (T, H, W, 3) -> the model's own encode and decode of them (what its chunks pass through)."""
    with torch.no_grad():
        parts = [model.decode_latents(model.encode_frames(torch.from_numpy(frames[lo:lo + batch])[None]))[0]
                 for lo in range(0, len(frames), batch)]
    return torch.cat(parts).cpu().numpy()


def cube_errors(error: np.ndarray, cube_pixel: np.ndarray) -> list[float]:
    """Mean error over the 3x3 pixels at each frame's cube position (frames where it is at least half visible,
    inside the image); ``cube_pixel`` has the columns `envs.real.objects.CUBE_PIXEL_FIELDS`."""
    h, w = error.shape[1:3]
    found = []
    columns = [CUBE_PIXEL_FIELDS.index(f) for f in ("x", "y", "visible")]
    for frame_error, (u, v, visible) in zip(error, cube_pixel[:, columns]):
        u, v = int(round(u)), int(round(v))
        if visible >= 0.5 and 1 <= u < w - 1 and 1 <= v < h - 1:
            found.append(float(frame_error[v - 1:v + 2, u - 1:u + 2].mean()))
    return found


def colour_readings(recon: np.ndarray, ep: dict) -> tuple[list[bool], dict | None]:
    """Whether each visible-cube frame's reconstruction reads as the episode's colour, and the reopen's
    `memory_probe.cube_recall` of the reconstructed video (None without a reopen)."""
    from evaluation.memory_probe import classify_frame, cube_recall

    pixel, color = np.asarray(ep["cube_pixel"]), str(ep["attrs"]["cube_color"])
    visible = pixel[:, CUBE_PIXEL_FIELDS.index("visible")]
    read = [classify_frame(recon[t], pixel[t]) == color for t in np.flatnonzero(visible >= 0.5)]
    recall = cube_recall(recon, pixel, np.asarray(ep["sim_state"]), color)
    return read, recall if recall["label"] is not None else None


def check(model, data: str, every: int = 1, max_episodes: int | None = None) -> dict:
    full, cube, episodes, read, reopens, psnrs, dynamic = [], [], 0, [], [], [], []
    for path in h5_files(data):
        for key in list_episodes(path):
            if max_episodes is not None and episodes >= max_episodes:
                break
            ep = read_episode(path, key)
            if "cube_color" in ep["attrs"] and "sim_state" in ep and "cube_pixel" in ep:
                recon = reconstruct(model, ep["frames"])  # the reopen's frames are indexed in the whole episode
                frame_read, recall = colour_readings(recon, ep)
                read += frame_read
                reopens += [recall] if recall is not None else []
                recon = recon[::every]
            else:
                recon = reconstruct(model, ep["frames"][::every])
            frames = ep["frames"][::every]
            error = np.abs(recon.astype(np.float32) - frames)
            full.append(float(error.mean()))
            psnrs.append(psnr(recon, frames))
            dynamic.append(masked_psnr(recon, frames, dynamic_region(frames, ep["frames"][0])))
            if "cube_pixel" in ep:
                cube += cube_errors(error, np.asarray(ep["cube_pixel"])[::every])
            episodes += 1
    if not episodes:
        raise SystemExit(f"no episodes in {data}")
    return {"episodes": episodes, "frame_mae": float(np.mean(full)), "psnr": float(np.mean(psnrs)),
            "dynamic_psnr": float(np.nanmean(dynamic)) if not np.isnan(dynamic).all() else None,
            "cube_mae": float(np.mean(cube)) if cube else None, "cube_frames": len(cube),
            "cube_color_accuracy": float(np.mean(read)) if read else None, "color_frames": len(read),
            "reopen_recall": float(np.mean([r["correct"] for r in reopens])) if reopens else None,
            "reopen_frame_accuracy": float(np.mean([r["frame_accuracy"] for r in reopens])) if reopens else None,
            "reopen_episodes": len(reopens)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m experiments.vae_check", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", default="default", help="model folder, 'default' or a preset name")
    ap.add_argument("--data", required=True, help="h5 episode file or folder")
    ap.add_argument("--every", type=int, default=1, help="use every n-th frame (default 1)")
    ap.add_argument("--max-episodes", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    model, _ = load_model(args.model, args.device)
    result = {"model": args.model, "data": args.data, **check(model, args.data, args.every, args.max_episodes)}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

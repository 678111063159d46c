"""The denoising loss of a model on the chunk windows of episode folders, with the same draws for every folder.

    python -m experiments.loss_check --model default --data data/scene data/scene_unseen
    python -m experiments.loss_check --model runs/s21/model --data $W/scene $W/scene_eval --windows 256 --out loss.json

A training run's logged loss is over the episodes it learns from; whether the model generalises or memorises
its episodes shows only against episodes it never saw, drawn the same way (the same task mix and `collect`
options, another seed). Each folder's windows (`envs.data.ChunkDataset`; at most ``--windows`` of them, spread
evenly over the folder) are scored at fixed timesteps (``--timesteps``) with noise drawn from one seeded generator
in the same order for every folder, so two folders, or two models on one folder, are compared on the same draws
and a rerun repeats exactly. Reported per folder: the plain mean over the new frames' latent cells, the mean
with the cube's cells weighted 1 + ``--object-weight`` (as `TrainConfig.object_weight` trains; windows without a
cube record weigh 1 everywhere) and the plain mean per timestep: a gap between the training episodes and unseen
ones that is largest at high timesteps is the model recalling its training episodes' motion (session 21).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from envs.data import ChunkDataset
from worldmodel.diffusion import denoising_prediction, masked_mse
from worldmodel.imagination import resolve_precision
from worldmodel.loading import load_model
from worldmodel.model import batch_action

DEFAULT_TIMESTEPS = (50, 250, 500, 750, 950)


def evenly_spaced(num_items: int, windows: int | None) -> list[int]:
    """At most ``windows`` indices spread evenly over ``num_items`` (all of them for None or more)."""
    if windows is None or windows >= num_items:
        return list(range(num_items))
    return [i * num_items // windows for i in range(windows)]


@torch.no_grad()
def folder_loss(model, data: str, timesteps: tuple[int, ...] = DEFAULT_TIMESTEPS, windows: int | None = 256,
                object_weight: float = 3.0, batch_size: int = 64, seed: int = 0, precision: str = "fp32") -> dict:
    """The model's loss on ``data``'s chunk windows (see the module docstring); Φ alone, no conditioning dropout."""
    cfg = model.config
    num_train = model.scheduler.config.num_train_timesteps
    bad = [t for t in timesteps if not 0 <= t < num_train]
    if not timesteps or bad:
        raise ValueError(f"timesteps must be integers in [0, {num_train}), got {list(timesteps)}")
    dataset = ChunkDataset(data, cfg.context_frames, cfg.new_frames)
    if len(dataset) == 0:
        raise ValueError(f"{data} holds no chunk windows")
    dataset = Subset(dataset, evenly_spaced(len(dataset), windows))
    device = model.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(precision, device) == "bf16")
    generator = torch.Generator().manual_seed(seed)
    weighted_sum = 0.0
    by_t = {t: 0.0 for t in timesteps}  # summed over windows
    was_training = model.training
    model.eval()
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            latents = model.batch_latents(batch)
            b = latents.shape[0]
            cond = model.encode_action(batch_action(batch, cfg), b)
            given = torch.zeros(b, latents.shape[2], dtype=torch.bool, device=device)
            given[:, : cfg.context_frames] = True
            weights = model.object_weights(batch, object_weight, 1, device)
            for t in timesteps:
                noise = torch.randn(latents.shape, generator=generator).to(device)
                with autocast:
                    pred, target = denoising_prediction(model.unet, model.scheduler, latents, given, cond, noise,
                                                        torch.full((b,), t, device=device))
                plain = float(masked_mse(pred.float(), target, given))
                by_t[t] += plain * b
                weighted = plain if weights is None else float(masked_mse(pred.float(), target, given, weights=weights))
                weighted_sum += weighted * b
    finally:
        model.train(was_training)
    by_timestep = {str(t): v / len(dataset) for t, v in by_t.items()}
    return {"data": data, "windows": len(dataset), "plain": sum(by_timestep.values()) / len(timesteps),
            "object_weighted": weighted_sum / (len(dataset) * len(timesteps)), "by_timestep": by_timestep}


def markdown(rows: list[dict]) -> str:
    ts = list(rows[0]["by_timestep"])
    lines = ["| data | windows | loss | cube-weighted loss | " + " | ".join(f"t={t}" for t in ts) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(ts)]
    for r in rows:
        lines.append(f"| {r['data']} | {r['windows']} | {r['plain']:.5f} | {r['object_weighted']:.5f} | "
                     + " | ".join(f"{r['by_timestep'][t]:.5f}" for t in ts) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m experiments.loss_check", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", default="default", help="model folder, 'default' or a preset name")
    ap.add_argument("--data", nargs="+", required=True, help="h5 episode files or folders, each scored on its own")
    ap.add_argument("--windows", type=int, default=256, help="chunk windows per folder, spread evenly (0: all)")
    ap.add_argument("--timesteps", default=",".join(map(str, DEFAULT_TIMESTEPS)),
                    help="comma-separated diffusion timesteps each window is scored at (default %(default)s)")
    ap.add_argument("--object-weight", type=float, default=3.0, help="the cube cells' extra weight (default 3)")
    ap.add_argument("--batch", type=int, default=64, help="windows per UNet forward")
    ap.add_argument("--seed", type=int, default=0, help="the noise generator's seed")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--text-cache", default=None, help="safetensors of instruction embeddings")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    try:
        timesteps = tuple(int(t) for t in args.timesteps.split(",") if t.strip())
    except ValueError:
        ap.error(f"--timesteps must be comma-separated integers, got {args.timesteps!r}")
    if args.windows < 0:
        ap.error(f"--windows must be >= 0, got {args.windows}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = load_model(args.model, args.device, text_cache=args.text_cache)
    rows = []
    for data in args.data:
        try:
            rows.append(folder_loss(model, data, timesteps, args.windows or None, args.object_weight, args.batch,
                                    args.seed, args.precision))
        except ValueError as err:
            ap.error(str(err))
    result = {"model": args.model, "timesteps": list(timesteps), "seed": args.seed, "precision": args.precision,
              "object_weight": args.object_weight, "folders": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(markdown(rows))
    return result


if __name__ == "__main__":
    main()

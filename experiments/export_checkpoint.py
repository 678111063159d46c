"""A training run's last checkpoint as a model folder: what the run would save if it ended there.

    python -m experiments.export_checkpoint --init runs/deep2 --checkpoint runs/train/slow/last.ckpt --out runs/ckpt

A device lease can be taken back before its run ends (sessions 23-25 lost theirs so); `device_session.sh watch`
exports the slow phase's checkpoint each call, so the last one that came back survives the machine. The weights
are the checkpoint's, its moving average in place (`worldmodel.train.checkpointed_weights`); the VAE, text
embeddings, heads and start frames come from `--init`, the model the run started from (`init_from`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from envs.world_model_env.assets import save_keeping_extras
from worldmodel.config import WorldModelConfig
from worldmodel.loading import load_model, model_folder
from worldmodel.model import CONFIG_NAME, load_weights
from worldmodel.train import checkpointed_weights


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m experiments.export_checkpoint", description=__doc__.split("\n\n")[0])
    p.add_argument("--init", required=True, help="the model folder the run started from ('default' or a folder)")
    p.add_argument("--checkpoint", required=True, help="a phase's last.ckpt (out_dir/<phase>/last.ckpt)")
    p.add_argument("--out", required=True, help="folder to write the model to")
    p.add_argument("--text-cache", default=None, help="instruction embeddings the run trained with (safetensors)")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                   help="stored weights (default float16, as experiments.train's train_fast config saves)")
    args = p.parse_args(argv)

    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise SystemExit(f"no checkpoint at {checkpoint}")
    weights, step, model_config = checkpointed_weights(checkpoint)
    folder = model_folder(args.init)
    if folder is None:
        raise SystemExit(f"--init must be 'default' or a saved model folder, got {args.init!r}")
    init_config = WorldModelConfig.load(folder / CONFIG_NAME).to_dict()
    # the run's `model.*` overrides (e.g. Temp-LoRA settings) are in the checkpoint's config, not the folder's
    overrides = {k: v for k, v in model_config.items() if init_config.get(k) != v}
    try:
        model, _ = load_model(folder, "cpu", text_cache=args.text_cache, seed=None, **overrides)
    except ValueError as err:  # an override that changes weight shapes: another architecture than the run's
        raise SystemExit(f"{checkpoint} does not fit the model at {folder} (config {sorted(overrides)} differs): "
                         f"{err}. Is --init the run's init_from?") from err
    missing, unexpected = load_weights(model, weights)
    if missing or unexpected:
        raise SystemExit(f"{checkpoint} does not fit the model at {folder}: missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]} ({len(missing)} and {len(unexpected)}). Is --init the run's init_from?")
    out = Path(args.out)
    card = (f"# Exported checkpoint\n\nThe weights of `{checkpoint.name}` at step {step} (moving average in place), "
            f"on the model the run started from.\n")
    save_keeping_extras(model, folder, out, card=card, dtype=getattr(torch, args.dtype))
    print(f"step {step}: wrote {out} ({sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 2**20:.1f} MiB)")
    return out


if __name__ == "__main__":
    main()

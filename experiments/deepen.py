"""Deepen a trained model's UNet (more layers per block, the new ones identities) and save it, ready to train on.

    python -m experiments.deepen --model default --layers-per-block 2 --out runs/deep2
    python -m experiments.train --config-name train_fast init_from=runs/deep2 ...   # then train it

The saved model generates what the source does (`worldmodel.deepen`): the script checks it on one
denoising pass of random latents before it writes, and copies the source's heads and start frames.
The shipped default may be at most 64 MiB: `small` at 2 layers per block is about 61 MiB in float16.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from envs.world_model_env.assets import save_keeping_extras
from worldmodel.deepen import deepen
from worldmodel.loading import load_model


def _unet_output(model, seed: int = 0) -> torch.Tensor:
    """One denoising pass of the UNet on fixed random inputs (what the check compares)."""
    cfg = model.unet.config
    g = torch.Generator().manual_seed(seed)
    tokens = model.config.max_text_tokens + model.config.action_tokens
    x = torch.randn(2, cfg.in_channels, model.config.context_frames + model.config.new_frames, 16, 16, generator=g)
    cond = torch.randn(2, tokens, cfg.cross_attention_dim, generator=g)
    with torch.no_grad():
        return model.unet(x, torch.tensor([50, 900]), encoder_hidden_states=cond).sample


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m experiments.deepen", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="'default' or a model folder (save_pretrained)")
    p.add_argument("--layers-per-block", type=int, required=True, help="the deeper UNet's layers per block")
    p.add_argument("--out", required=True, help="folder to write the deepened model to")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                   help="stored weights (default float16)")
    args = p.parse_args(argv)

    model, folder = load_model(args.model, "cpu", seed=None)
    if folder is None:
        raise SystemExit(f"--model must be 'default' or a saved model folder, got {args.model!r}")
    before = _unet_output(model)
    old_params = sum(q.numel() for q in model.unet.parameters())
    deepen(model, args.layers_per_block)
    model.eval()
    diff = (_unet_output(model) - before).abs().max().item()
    if diff > 1e-3 * max(1.0, before.abs().max().item()):
        raise SystemExit(f"the deepened UNet's output differs from the source's by {diff:.3g}: not written")
    out = Path(args.out)
    save_keeping_extras(model, folder, out, dtype=getattr(torch, args.dtype))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    new_params = sum(q.numel() for q in model.unet.parameters())
    print(f"UNet {old_params / 1e6:.1f} M -> {new_params / 1e6:.1f} M parameters, layers per block "
          f"{args.layers_per_block}; max output difference {diff:.2g}; wrote {out} ({size / 2**20:.1f} MiB)")
    return out


if __name__ == "__main__":
    main()

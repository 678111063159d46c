"""Θ kept off the input directions ordinary chunks use (``TempLoRAConfig.protect``; issue 15's interference bound).

A write changes a target layer's output by ``s x A B`` for every input ``x``, whatever chunk it comes from: what Θ
stored for one moment of an episode leaks into every other chunk (the `recall` rule: +18% to +75% fast loss on other
episodes' chunks, against the issue's +2%). If A's columns are orthogonal to the subspace that holds most of a layer's
input energy on ordinary chunks, ``x A`` is small for those inputs and Θ changes the layer only along directions they
seldom use (gradient projection in the manner of GPM, Saha et al. 2021; here A itself is projected, after its draw at a
reset and after each of Adam's steps, since Adam's per-factor scaling would carry a projected gradient back out).

`ordinary_bases` measures the subspaces under Φ on chunks the caller names (episodes the memory is not tested on);
`BatchedTempLoRA.protect` takes them.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..chunk import Chunk
from ..diffusion import diffusion_loss
from .batched_lora import _patches, factor_input
from .rule import fast_timesteps, given_frames, target_layers

ROWS = 2048  # input rows per layer and forward that the second moment is estimated from (a random sample of them)


@torch.no_grad()
def ordinary_bases(model: Any, config: Any, chunks: Sequence[Chunk], energy: float, seed: int = 0
                   ) -> list[torch.Tensor]:
    """Per target layer of ``config`` (`rule.target_layers`, the memory's order), the top eigenvectors (d_in, k) of the
    second moment of its inputs under Φ that hold a share ``energy`` of their energy, over the chunks' fast-loss
    forwards (null action, the given frames clean, one draw at each of the fast step's timesteps; a convolution's
    inputs are the patches its factor A reads). ``energy`` 0 gives no directions (k = 0)."""
    if not 0.0 <= energy < 1.0:
        raise ValueError(f"energy must be a share 0 <= q < 1, got {energy}")
    if not chunks:
        raise ValueError("ordinary_bases needs at least one chunk")
    layers = [layer for _, layer in target_layers(model.unet, config.target_modules, config.blocks)]
    sampler = torch.Generator().manual_seed(seed)
    moments: list[torch.Tensor | None] = [None] * len(layers)

    def grab(index: int, patches: dict | None):
        def hook(module, args, output):
            x = factor_input(args[0], patches, isinstance(module, torch.nn.Conv2d))
            x = x.reshape(-1, x.shape[-1]).float()
            if x.shape[0] > ROWS:
                x = x[torch.randperm(x.shape[0], generator=sampler)[:ROWS].to(x.device)]
            m = (x.t() @ x).double().cpu()
            moments[index] = m if moments[index] is None else moments[index] + m

        return hook

    handles = [layer.register_forward_hook(grab(i, _patches(layer))) for i, layer in enumerate(layers)]
    t = fast_timesteps(config, model)
    try:
        for k, chunk in enumerate(chunks):
            latents = chunk.latents[:1].expand(len(t), -1, -1, -1, -1)
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed + k)).to(latents)
            given = given_frames(config, len(t), latents.shape[2], chunk.num_context, latents.device)
            diffusion_loss(model.unet, model.scheduler, latents, given, model.action_encoder.null(len(t)), noise,
                           t.to(latents.device))
    finally:
        for h in handles:
            h.remove()
    bases = []
    for m in moments:
        values, vectors = torch.linalg.eigh(m)
        values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
        share = values.cumsum(0) / values.sum().clamp_min(1e-30)
        k = int((share < energy).sum()) + 1 if energy > 0 else 0
        bases.append(vectors[:, :k].float().contiguous())
    return bases

"""The whole training set's chunk-window latents, encoded once by the frozen VAE and held on the device.

The VAE is frozen during slow learning, so a window's latents never change: encoding them once replaces
the data loader and the per-step VAE encode. A step gathers its windows from the cache by index
(`LatentCache.batch`) on the device; the instructions are ids into a table of frozen text-model
embeddings, also on the device, and the action vectors sit beside the latents.

Memory: (C, Tc + Tn, h, w) per window in `dtype`; the shipped `small` model's windows are
4 x 8 x 16 x 16 floats, 32 KiB in float32, so 100k windows take 3.2 GiB. The cube records that
`TrainConfig.object_weight` reads add (Tn + 1) x 3 + 1 floats a window (64 B for `small`: 32 MB for
500k windows), and nothing when no window has one (synthetic data, Crafter).

Several processes (`accelerate launch`) each encode an equal share of the windows and all-gather the
rest, so every process holds the whole cache and can gather any step's items.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from .action import ActionEncoder


@dataclass
class CachedBatch:
    """One step's windows, gathered from the cache: everything `cached_loss` needs, on the device."""

    latents: torch.Tensor  # (B, C, Tc + Tn, h, w), float32
    text_emb: torch.Tensor | None  # (B, max_text_tokens, text_width) frozen text-model states
    vectors: torch.Tensor | None  # (B, Tn, action_dim)
    # the cube's (x, y, visible) in the last context frame and the new frames, and the frame width those pixels
    # refer to (`worldmodel.diffusion.object_loss_weights`); None when no window of the cache has a record
    object_pixels: torch.Tensor | None = None  # (B, Tn + 1, 3) float32
    frame_width: torch.Tensor | None = None  # (B,) float32


class LatentCache:
    """Latents, action vectors, instruction ids and cube records of every window of a chunk-window dataset.

    `object_pixels` (N, Tn + 1, 3) / `frame_width` (N,): the rows of the items' ``object_pixels`` that
    `object_loss_weights` reads (the last context frame and the new frames) and their ``frame_width``;
    None when the items have none or no window's cube is ever visible (the weights would be all ones).
    """

    def __init__(self, latents: torch.Tensor, vectors: torch.Tensor | None, text_ids: torch.Tensor | None,
                 text_table: torch.Tensor | None, texts: list[str], object_pixels: torch.Tensor | None = None,
                 frame_width: torch.Tensor | None = None):
        if (object_pixels is None) != (frame_width is None):
            raise ValueError("LatentCache: object_pixels and frame_width come together (both or neither)")
        self.latents, self.vectors, self.text_ids, self.text_table, self.texts = (
            latents, vectors, text_ids, text_table, texts)
        self.object_pixels, self.frame_width = object_pixels, frame_width

    def __len__(self) -> int:
        return self.latents.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.latents, self.vectors, self.text_ids, self.text_table,
                                                          self.object_pixels, self.frame_width) if t is not None)

    def batch(self, index: torch.Tensor) -> CachedBatch:
        """The windows at `index` (a long tensor, on any device)."""
        index = index.to(self.latents.device)
        return CachedBatch(
            latents=self.latents[index].float(),
            text_emb=None if self.text_ids is None else self.text_table[self.text_ids[index]],
            vectors=None if self.vectors is None else self.vectors[index],
            object_pixels=None if self.object_pixels is None else self.object_pixels[index],
            frame_width=None if self.frame_width is None else self.frame_width[index],
        )

    @classmethod
    @torch.no_grad()
    def build(cls, model: Any, dataset: Dataset, device: torch.device | str, batch_size: int = 256,
              num_workers: int = 0, dtype: torch.dtype = torch.float32, rank: int = 0,
              num_processes: int = 1) -> "LatentCache":
        """Encode every window of `dataset` (items: context, target, text, action; optional object_pixels and
        frame_width, kept when some window's cube is visible) with `model`'s VAE.

        `model` is a `SlowFastVGen` already on `device`. With several processes each encodes
        ceil(N / num_processes) windows and all of them end up with the whole cache (collective call).
        """
        n = len(dataset)
        if n == 0:
            raise ValueError("the training dataset is empty")
        share = math.ceil(n / num_processes)
        own = range(rank * share, min((rank + 1) * share, n))
        loader = DataLoader(Subset(dataset, list(own)), batch_size=batch_size, num_workers=num_workers,
                            collate_fn=default_collate, generator=torch.Generator())
        mc = model.config
        enc: ActionEncoder = model.action_encoder
        lat_shape = (mc.latent_channels, mc.chunk_frames, mc.latent_size, mc.latent_size)
        latents = torch.zeros(share, *lat_shape, dtype=dtype, device=device)
        vectors = torch.zeros(share, mc.new_frames, mc.action_dim, device=device) if enc.uses_vector else None
        # NaN / visible 0 (no record) in the rows a short last share leaves empty; cut off below anyway
        pixels = torch.full((share, mc.new_frames + 1, 3), float("nan"), device=device)
        pixels[..., 2] = 0.0
        width = torch.full((share,), float(mc.frame_size), device=device)
        has_records = "object_pixels" in dataset[0]
        texts: list[str] = []
        pos = 0
        for batch in loader:
            b = len(batch["target"])
            latents[pos : pos + b] = model.batch_latents(batch).to(dtype)
            if vectors is not None:
                vectors[pos : pos + b] = torch.as_tensor(batch["action"], dtype=torch.float32).to(device)
            if has_records:
                pixels[pos : pos + b] = torch.as_tensor(batch["object_pixels"])[:, -(mc.new_frames + 1):].to(device)
                width[pos : pos + b] = torch.as_tensor(batch["frame_width"]).to(device, torch.float32)
            texts.extend(batch["text"])
            pos += b
        if num_processes > 1:
            latents = _all_gather_rows(latents)[:n]
            vectors = None if vectors is None else _all_gather_rows(vectors)[:n]
            pixels, width = _all_gather_rows(pixels)[:n], _all_gather_rows(width)[:n]
            every: list[list[str]] = [[] for _ in range(num_processes)]
            dist.all_gather_object(every, texts)
            texts = [t for part in every for t in part]
        pixels, width = pixels[:n], width[:n]
        if not bool((pixels[..., 2] > 0).any()):  # every weight would be 1: keep nothing, train on the plain mean
            pixels = width = None
        text_ids = text_table = None
        vocab: list[str] = []
        if enc.uses_text:
            vocab = sorted(set(texts))
            ids = {t: i for i, t in enumerate(vocab)}
            text_ids = torch.tensor([ids[t] for t in texts], dtype=torch.long, device=device)
            text_table = enc.embed_texts(vocab).float().to(device)
        return cls(latents, vectors, text_ids, text_table, vocab, pixels, width)


def _all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def encode_cached_action(encoder: ActionEncoder, text_emb: torch.Tensor | None, vectors: torch.Tensor | None,
                         drop: torch.Tensor | None, b: int) -> torch.Tensor:
    """`ActionEncoder.forward` on cached text-model states (B, L, W) instead of strings (tests check that
    they agree). A part given as None gets its null tokens, as a missing part does there."""
    parts = []
    if encoder.uses_text:
        null = encoder.text_null.expand(b, -1, -1)
        parts.append(null if text_emb is None else encoder.text_proj(text_emb.to(null.dtype)))
    if encoder.uses_vector:
        null = encoder.vector_null.expand(b, -1, -1)
        if vectors is None:
            parts.append(null)
        else:
            v = vectors.to(null.dtype)
            parts.append(encoder.vector_mlp(v.flatten(1)).view(b, encoder.config.action_tokens, -1))
    if drop is not None:
        parts = [torch.where(drop[:, i].view(-1, 1, 1), n.expand_as(p), p)
                 for i, (p, n) in enumerate(zip(parts, encoder._nulls()))]
    return torch.cat(parts, dim=1)

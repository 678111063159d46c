"""Attention that runs at every batch size: SDPA backend choice and batch chunking for the UNet3D.

The UNet3D's temporal attention runs one sequence per latent pixel: batch B of 16x16 latents gives
256*B sequences of 8 frames. PyTorch's fused SDPA kernels put the batch in a CUDA grid dimension
limited to 65,535 (pytorch/pytorch#146704 for the flash and memory-efficient kernels), and bf16 training
at B = 256 (65,536 sequences) crashed inside cuDNN attention (`mha_graph.execute(...).is_good()`).
`BatchChunkedAttnProcessor` splits any attention call with more than `max_batch` sequences into pieces
(exactly the same result: attention is independent per sequence) and `sdpa_backends` names the SDPA
kernels a training step may use.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from torch.nn.attention import SDPBackend, sdpa_kernel

# Every SDPA kernel's grid takes at most 65,535 in its batch dimension; half of it leaves room for heads.
MAX_SDPA_BATCH = 32768

# Names for `TrainConfig.attention`. "auto": the memory-efficient kernel, math as the fallback: the fastest
# on an H200 for the `small` UNet at batch 256, bf16 (docs/RESULTS.md, "Training throughput"; flash was
# the slowest there); "default": PyTorch's own choice (cuDNN attention on an H200, which crashed at batch
# 256 without the batch chunking).
ATTENTION_BACKENDS: dict[str, list[SDPBackend] | None] = {
    "auto": [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH],
    "efficient": [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
    "cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH],
    "math": [SDPBackend.MATH],
    "default": None,
}


class BatchChunkedAttnProcessor(AttnProcessor2_0):
    """diffusers' SDPA processor, called on at most `max_batch` sequences at a time."""

    def __init__(self, max_batch: int = MAX_SDPA_BATCH):
        super().__init__()
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        b = hidden_states.shape[0]
        if b <= self.max_batch:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        pieces = []
        for lo in range(0, b, self.max_batch):
            sl = slice(lo, lo + self.max_batch)
            pieces.append(super().__call__(
                attn, hidden_states[sl],
                None if encoder_hidden_states is None else encoder_hidden_states[sl],
                None if attention_mask is None else attention_mask[sl],
                None if temb is None else temb[sl], *args, **kwargs))
        return torch.cat(pieces)


def use_chunked_attention(unet: torch.nn.Module, max_batch: int = MAX_SDPA_BATCH) -> None:
    """Give every attention layer of a diffusers model the batch-chunked SDPA processor."""
    unet.set_attn_processor(BatchChunkedAttnProcessor(max_batch))


def check_attention(name: str) -> None:
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; expected one of {sorted(ATTENTION_BACKENDS)}")


@contextlib.contextmanager
def sdpa_backends(name: str) -> Iterator[None]:
    """Restrict SDPA to the named kernels (`ATTENTION_BACKENDS`); backward uses forward's kernel."""
    check_attention(name)
    backends = ATTENTION_BACKENDS[name]
    if backends is None:
        yield
        return
    with sdpa_kernel(backends):
        yield

"""Attention that runs at every batch size: SDPA backend choice and batch chunking for the UNet3D.

The UNet3D's temporal attention runs one sequence per latent pixel: batch B of 16x16 latents gives
256*B sequences of 8 frames. PyTorch's fused SDPA kernels put the batch in a CUDA grid dimension
limited to 65,535 (pytorch/pytorch#146704 for the flash and memory-efficient kernels), and bf16 training
at B = 256 (65,536 sequences) crashed inside cuDNN attention (`mha_graph.execute(...).is_good()`).
`BatchChunkedAttnProcessor` splits the SDPA kernel call of any attention with more than `max_batch`
sequences into pieces (exactly the same result: attention is independent per sequence) and
`sdpa_backends` names the SDPA kernels a training step may use.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn.functional as F
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
    """diffusers' SDPA processor (`AttnProcessor2_0`, the same steps) with the SDPA call alone split into
    pieces of at most `max_batch` sequences.

    Only the kernel is split: the projections (to_q/k/v, to_out) see the whole batch, so forward hooks on
    them (Temp-LoRA's per-env rows, `worldmodel.memory.batched_lora`) see the UNet's batch layout at every
    size. Splitting the whole processor call instead handed those hooks a slice of the batch.
    """

    def __init__(self, max_batch: int = MAX_SDPA_BATCH):
        super().__init__()
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        pieces = []
        for lo in range(0, batch_size, self.max_batch):  # (batch, heads, seq, head_dim) per piece
            sl = slice(lo, lo + self.max_batch)
            pieces.append(F.scaled_dot_product_attention(
                query[sl], key[sl], value[sl], attn_mask=None if attention_mask is None else attention_mask[sl],
                dropout_p=0.0, is_causal=False))
        hidden_states = pieces[0] if len(pieces) == 1 else torch.cat(pieces)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


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

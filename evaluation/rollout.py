"""Roll held-out episodes out through the imagination core, one Table 2 variant at a time.

``free`` mode starts from the episode's first real frame and feeds the recorded per-chunk actions, each
chunk conditioned on the last generated frames; Temp-LoRA learns from each generated chunk. ``teacher``
mode learns from the real chunk instead (the core's ``teacher_frames``) and conditions the next chunk
on the real frames; scores always use generated frames. ``recall`` mode (the memory benchmark) is
teacher-forced up to the chunk that holds the episode's last first visit of an out-of-context revisit
(`teacher_chunks`), so the memory has seen the real scene, and free after it: what the model shows at
the revisit (the drawer reopened) comes from Φ and what Θ stored, not from a badly generated first visit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from worldmodel.imagination import Imagination
from worldmodel.memory import BatchedTempLoRA, TempLoRA

from .episodes import EvalEpisode, stride_episode, teacher_chunks

MODES = ("free", "teacher", "recall")



def check_compatible(model, episodes: Sequence[EvalEpisode], what: str) -> None:
    cfg = model.config
    shape = episodes[0].frames.shape[1:]
    if shape != (cfg.frame_size, cfg.frame_size, 3):
        raise ValueError(f"{what} makes {cfg.frame_size}x{cfg.frame_size} frames but the episodes have {shape}")
    if cfg.action_type in ("vector", "both") and episodes[0].actions.shape[-1] != cfg.action_dim:
        raise ValueError(f"{what} takes {cfg.action_dim}-d action vectors but the episodes have "
                         f"{episodes[0].actions.shape[-1]}-d ones")
    if cfg.action_type in ("text", "both"):
        texts = sorted({t for e in episodes for t in e.language})
        try:
            model.action_encoder.embed_texts(texts)
        except (ImportError, OSError) as err:
            raise RuntimeError(f"{what}: cannot embed the episodes' instructions ({err}); pass --text-cache PATH "
                               "(see `python -m experiments.text_cache`)") from err


def variant_config(name: str, model, overrides: dict[str, Any]):
    """The Temp-LoRA config of a variant (None: no Temp-LoRA): the model's, with the command line's
    ``overrides`` (steps, lr, objective, draws, rehearsal) and the variant's learning rule."""
    if name == "no_temp_lora":
        return None
    rule = {"full": "local", "no_chunk_input": "local", "no_local_rule": "full_sequence", "original": "original"}[name]
    return dataclasses.replace(model.config.temp_lora, **overrides, variant=rule)


def variant_memory(model: Any, config: Any, num_episodes: int, single: TempLoRA | None = None):
    """The memory a variant rolls out with: the peft ``single`` (one episode; its config swapped in) or
    per-episode factors; ``config`` None means Φ alone (``single``'s adapters are switched off)."""
    if config is None:
        if single is not None:  # Θ = 0 and adapters off: exactly Φ
            single.reset()
            single.set_enabled(False)
        return None
    if single is not None:
        if num_episodes != 1:
            raise ValueError("the peft TempLoRA path rolls out one episode at a time")
        single.config = config
        single.set_enabled(True)
        return single
    return BatchedTempLoRA(model, num_episodes, config)


def model_action(model: Any, texts: list[str], vectors: np.ndarray) -> Any:
    kind = model.config.action_type
    if kind == "text":
        return texts
    vec = torch.from_numpy(np.ascontiguousarray(vectors, np.float32))
    return vec if kind == "vector" else {"text": texts, "vector": vec}


@dataclass
class Rollout:
    videos: list[np.ndarray]  # per episode, uint8 (T, H, W, 3); frame 0 is the real start frame
    update_s: list[float] = field(default_factory=list)  # per update call (the whole batch)
    generate_s: list[float] = field(default_factory=list)  # per chunk call (the whole batch)
    rollbacks: list[int] = field(default_factory=list)


@torch.no_grad()
def rollout(model: Any, memory: Any, episodes: Sequence[EvalEpisode], mode: str, steps: int | None,
            seeds: Sequence[int], on_chunk: Callable[[], None] | None = None) -> Rollout:
    """Generate every episode of the batch chunk after chunk (see the module docstring for the modes).

    Episode k draws from a generator seeded ``seeds[k]``; the peft memory draws from the global RNG,
    seeded ``seeds[0]`` here.
    """
    tn = model.config.new_frames
    n_chunks = max(e.num_model_chunks(tn) for e in episodes)
    core = Imagination(model, len(episodes), memory, denoise_steps=steps, sync_timings=True)
    torch.manual_seed(int(seeds[0]))
    core.reset(None, [e.frames[:1] for e in episodes], seeds)

    def real(lo: int, hi: int) -> np.ndarray:  # (B, hi-lo, H, W, 3), indices clamped to each episode
        return np.stack([e.frames[np.clip(np.arange(lo, hi), 0, len(e.frames) - 1)] for e in episodes])

    forced = [teacher_chunks(e, mode, model.config.context_frames, tn) for e in episodes]
    pieces: list[list[np.ndarray]] = [[e.frames[:1]] for e in episodes]
    out = Rollout([])
    for c in range(n_chunks):
        start = 1 + c * tn
        acts = [e.chunk_action(c, tn) for e in episodes]
        generate_s = update_s = 0.0
        for teach in (True, False):  # the teacher-forced envs, then the free ones (one call each)
            ids = [b for b in range(len(episodes)) if (c < forced[b]) == teach]
            if not ids:
                continue
            action = model_action(model, [acts[b][0] for b in ids], np.stack([acts[b][1] for b in ids]))
            chunk = core.step(ids, action, teacher_frames=real(start, start + tn)[ids] if teach else None)
            generate_s += chunk.timings["denoise"] + chunk.timings["decode"]
            update_s += chunk.timings["fast_update"] if chunk.updates else 0.0
            frames = chunk.frames.cpu().numpy()
            for k, b in enumerate(ids):
                pieces[b].append(frames[k])
        out.generate_s.append(generate_s)
        if memory is not None:
            out.update_s.append(update_s)
        if on_chunk is not None:
            on_chunk()
    out.videos = [np.concatenate(p)[: len(e.frames)] for p, e in zip(pieces, episodes)]
    out.rollbacks = list(memory.rollbacks) if memory is not None else []
    return out


def imagined_episodes(model: Any, episodes: list[dict], denoise_steps: int | None = 2, seed: int = 0,
                      batch: int = 32, log=None, mode: str = "teacher") -> list[dict]:
    """Copies of recorded episodes whose frames after the first are the world model's (Φ alone) teacher-forced
    chunks: each chunk generated from the real frames before it under the recorded skill and actions, as the
    planner's first imagined chunk is. Labels (reward, success, states) stay the real ones. ``mode="free"``: each
    chunk from the model's own chunk before it instead, the whole episode imagined from its first frame under the
    recorded skills, as PPO in imagination sees it; the labels still say what really happened, so heads learn the
    real outcome of what the model shows (a cube the model lost is not a cube put away).

    Why: the heads judge imagined chunks, but learnt on real frames only they read the model's artefacts their own
    way; from the real scene of task 4 after "press the left button", every imagined cube skill was called the task
    done (P 1.00; docs/RESULTS.md, session 10) where the real scene is two skills short."""
    if mode not in ("teacher", "free"):
        raise ValueError(f"imagined episodes are 'teacher' or 'free', not {mode!r}")
    out = []
    for lo in range(0, len(episodes), batch):
        part = episodes[lo:lo + batch]
        for e in part:
            if int(e["attrs"]["chunk_len"]) != model.config.new_frames:
                raise ValueError(f"episodes of {e['attrs']['chunk_len']} frames per chunk for a model that makes "
                                 f"{model.config.new_frames}")
        evs = [stride_episode(e, 1, f"episode {lo + j}") for j, e in enumerate(part)]
        videos = rollout(model, None, evs, mode, denoise_steps, [seed + lo + j for j in range(len(part))]).videos
        out += [{**e, "frames": v} for e, v in zip(part, videos)]
        if log is not None:
            log(f"imagined {len(out)} of {len(episodes)} episodes")
    return out

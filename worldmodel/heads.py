"""Learned reward / success / termination heads: the world-model env's reward function.

The heads look at the last ``num_frames`` frames of a chunk (generated or real, uint8) and the
episode's instruction, and predict the chunk's reward, the probability that the chunk's skill
succeeded, the probability that the task is done (termination) and, with ``to_go``, how many skills the
task still needs (`envs.real.tasks.skills_to_go`: a value for planners, whose reward dips before it rises)
and, with ``skills``, which skill to take next (`envs.real.tasks.next_skills`: the planners' prior).
They are trained on real task episodes (the ``envs.episodes`` schema: per-chunk ``reward`` and
``success``, ``attrs.instruction`` and ``attrs.task_success``), saved beside a model as ``heads/heads.json``
+ ``heads/heads.safetensors``, and used by ``SlowFastVGen-v0``. The real simulator's reward stays the ground truth for evaluation.

The instruction goes in as hashed word uni- and bi-gram features (no text model needed, stable across
processes); a small CNN encodes the frames (keeping a coarse spatial layout) and the instruction
modulates its features (FiLM).

With ``history`` the heads also see what the episode showed before the chunk: the start frame and every earlier
chunk's last frame, each encoded by a second small CNN and max-pooled over the episode (a latch: whether something
was ever seen, in any order, at a cost that does not grow with the episode). Why: one chunk cannot tell task 4's goal
(the cube shut in the drawer) from a cube the world model lost on the way (session 31: PPO in imagination carried
the cube over the shut drawer, the model dropped it from the picture, and one-frame heads called the task done); only
what came before (was the cube ever seen in the open drawer?) tells them apart. `HeadsHistory` keeps that pooled
view per imagined episode.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

HEADS_CONFIG = "heads.json"
HEADS_WEIGHTS = "heads.safetensors"
POOL = 4  # the frame features keep a coarse POOL x POOL layout (where things are matters)
TO_GO_SCALE = 4.0  # the to_go output is learnt in units of 4 skills (targets 0-12)


@dataclass
class HeadsConfig:
    frame_size: int = 64  # frames are resized to this (area interpolation) when they differ
    num_frames: int = 2  # last frames of a chunk the heads look at (stacked on channels)
    channels: tuple[int, ...] = (16, 32, 64)
    text_dim: int = 256  # hashed instruction features
    hidden: int = 128
    to_go: bool = True  # a fourth output: the skills still needed (heads saved before it have none)
    # > 0: logits over that many skills (`envs.real.skills.SKILLS` order), the skills that bring the instruction's
    # goal one skill closer from this state (`envs.real.tasks.next_skills`): a prior for planners (0: none)
    skills: int = 0
    # True: the heads also read the episode so far (its start frame and earlier chunk ends, max-pooled; see the
    # module docstring), given as `encode_history` features pooled by `HeadsHistory` or `examples_from_episodes`
    history: bool = False

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if self.num_frames < 1 or self.frame_size < 4 or not self.channels or self.text_dim < 1 or self.skills < 0:
            raise ValueError(f"invalid heads config: {self}")


def instruction_features(texts: Sequence[str | None], dim: int) -> torch.Tensor:
    """Hashed, signed bag of word unigrams and bigrams, L2-normalised: (B, dim). None/"" give zeros."""
    out = torch.zeros(len(texts), dim)
    for row, text in enumerate(texts):
        words = re.findall(r"[a-z0-9]+", (text or "").lower())
        grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
        for gram in grams:
            h = zlib.crc32(gram.encode("utf-8"))
            out[row, h % dim] += 1.0 if (h >> 31) & 1 else -1.0
    return F.normalize(out, dim=1)


class RewardHeads(nn.Module):
    """Reward (regression), success and termination (logits) from chunk frames + instruction."""

    def __init__(self, config: HeadsConfig | None = None):
        super().__init__()
        self.config = cfg = config or HeadsConfig()
        self.trunk = self._encoder(3 * cfg.num_frames)
        self.film = nn.Linear(cfg.text_dim, 2 * cfg.hidden)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        if cfg.history:  # one frame per earlier chunk end
            self.history_trunk = self._encoder(3)
        width = cfg.hidden + cfg.text_dim + (cfg.hidden if cfg.history else 0)
        self.mlp = nn.Sequential(nn.Linear(width, cfg.hidden), nn.SiLU(),
                                 nn.Linear(cfg.hidden, (4 if cfg.to_go else 3) + cfg.skills))
        # Reward normalisation fitted on the training targets (outputs are de-normalised).
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))

    def _encoder(self, c_in: int) -> nn.Sequential:
        """A small CNN from ``c_in`` channels to (B, hidden) features, a coarse POOL x POOL layout kept before the
        linear layer."""
        layers: list[nn.Module] = []
        for c in self.config.channels:
            # no normalisation layers: per-sample norms would erase the brightness and colour rewards hinge on
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.SiLU()]
            c_in = c
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(POOL), nn.Flatten(),
                             nn.Linear(c_in * POOL * POOL, self.config.hidden), nn.SiLU())

    @property
    def device(self) -> torch.device:
        return self.reward_mean.device

    def _frames(self, frames: Any, k: int | None = None) -> torch.Tensor:
        """uint8 (B, T, H, W, 3) or (B, H, W, 3) -> float (B, 3*k, S, S) in [-1, 1] (k: ``num_frames``)."""
        x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
        if x.dtype != torch.uint8:
            raise TypeError(f"heads take uint8 frames, got {x.dtype}")
        if x.ndim == 4:
            x = x.unsqueeze(1)
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"frames must be (B, T, H, W, 3) or (B, H, W, 3), got {tuple(x.shape)}")
        k = k or self.config.num_frames
        if x.shape[1] < k:  # repeat the first frame
            x = torch.cat([x[:, :1].expand(-1, k - x.shape[1], -1, -1, -1), x], dim=1)
        x = x[:, -k:].to(self.device).float() / 127.5 - 1.0  # (B, k, H, W, 3)
        b, _, h, w, _ = x.shape
        x = x.permute(0, 1, 4, 2, 3).reshape(b, 3 * k, h, w)
        s = self.config.frame_size
        if (h, w) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="area" if h >= s else "bilinear")
        return x

    def encode_history(self, frames: Any) -> torch.Tensor:
        """Features (B, hidden) of single frames (B, H, W, 3) uint8 of the episode so far (the start frame, earlier
        chunk ends); the heads read their elementwise max over the episode (`HeadsHistory`)."""
        if not self.config.history:
            raise ValueError("these heads read no history (config.history is False)")
        return self.history_trunk(self._frames(frames, k=1))

    def _check_history(self, history: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if not self.config.history:
            if history is not None:
                raise ValueError("these heads read no history (config.history is False); pass none")
            return None
        if history is None:
            raise ValueError("these heads read the episode so far: pass history, the max of `encode_history` over the "
                             "start frame and the earlier chunk ends (`HeadsHistory` keeps it per episode)")
        if tuple(history.shape) != (batch, self.config.hidden):
            raise ValueError(f"history must be ({batch}, {self.config.hidden}), got {tuple(history.shape)}")
        return history.to(self.device)

    def forward(self, frames: Any, instructions: Sequence[str | None],
                history: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Raw outputs: ``reward`` (B,) (de-normalised), ``success_logit`` and ``terminated_logit`` (B,), with
        ``config.to_go`` ``to_go`` (B,), the skills still needed (unclamped), and with ``config.skills``
        ``next_skill_logits`` (B, skills). ``history`` (heads with ``config.history`` only): (B, hidden) pooled
        `encode_history` features of the episode before this chunk."""
        x = self._frames(frames)
        if len(instructions) != x.shape[0]:
            raise ValueError(f"{len(instructions)} instructions for {x.shape[0]} frame stacks")
        history = self._check_history(history, x.shape[0])
        text = instruction_features(list(instructions), self.config.text_dim).to(x)
        feat = self.trunk(x)
        scale, shift = self.film(text).chunk(2, dim=1)
        out = self.mlp(torch.cat([feat * (1 + scale) + shift, text] + ([history] if history is not None else []),
                                 dim=1))
        return {
            "reward_norm": out[:, 0],
            "reward": out[:, 0] * self.reward_std + self.reward_mean,
            "success_logit": out[:, 1],
            "terminated_logit": out[:, 2],
            **({"to_go": out[:, 3] * TO_GO_SCALE} if self.config.to_go else {}),
            **({"next_skill_logits": out[:, -self.config.skills:]} if self.config.skills else {}),
        }

    @torch.no_grad()
    def predict(self, frames: Any, instructions: Sequence[str | None],
                history: torch.Tensor | None = None) -> dict[str, np.ndarray]:
        """float32 arrays (B,): ``reward``, ``success`` and ``terminated`` probabilities, with ``config.to_go``
        ``to_go`` (skills still needed, >= 0), and with ``config.skills`` ``next_skill`` (B, skills) probabilities.
        ``history``: as in `forward`."""
        was = self.training
        self.eval()
        out = self(frames, instructions, history)
        self.train(was)
        return {
            "reward": out["reward"].float().cpu().numpy(),
            "success": torch.sigmoid(out["success_logit"]).float().cpu().numpy(),
            "terminated": torch.sigmoid(out["terminated_logit"]).float().cpu().numpy(),
            **({"to_go": out["to_go"].clamp(min=0).float().cpu().numpy()} if self.config.to_go else {}),
            **({"next_skill": torch.softmax(out["next_skill_logits"].float(), dim=1).cpu().numpy()}
               if self.config.skills else {}),
        }

    def with_to_go(self) -> "RewardHeads":
        """These heads with a to_go output added (itself if it has one): every learnt weight kept, the new output
        starting at 0, so `--continue` can teach skills to go to heads saved before it existed."""
        if self.config.skills and not self.config.to_go:
            raise ValueError("heads with a next-skill output and no to_go output cannot grow one")
        return self if self.config.to_go else self._with_outputs(to_go=True)

    def with_next_skill(self, skills: int) -> "RewardHeads":
        """These heads with a next-skill output over ``skills`` skills (itself if it has one of that size; a to_go
        output is added too): every learnt weight kept, the new logits starting at 0 (uniform)."""
        if self.config.skills:
            if self.config.skills != skills:
                raise ValueError(f"these heads predict {self.config.skills} next skills, not {skills}")
            return self
        return self.with_to_go()._with_outputs(skills=skills)

    def with_history(self) -> "RewardHeads":
        """These heads reading the episode so far too (itself if they do): every learnt weight kept, the history's
        CNN fresh and its input to the output MLP zeroed, so the new heads start as these and learn what history
        adds (`--continue --history`)."""
        if self.config.history:
            return self
        heads = RewardHeads(HeadsConfig(**{**asdict(self.config), "history": True})).to(self.device)
        state = self.state_dict()
        first = state.pop("mlp.0.weight")
        heads.load_state_dict(state, strict=False)
        with torch.no_grad():
            heads.mlp[0].weight.zero_()
            heads.mlp[0].weight[:, :first.shape[1]] = first
        return heads

    def _with_outputs(self, **changes: Any) -> "RewardHeads":
        """A copy with more outputs, appended after the present ones (reward, success, done[, to_go]), zeroed."""
        heads = RewardHeads(HeadsConfig(**{**asdict(self.config), **changes})).to(self.device)
        state = self.state_dict()
        out_w, out_b = state.pop("mlp.2.weight"), state.pop("mlp.2.bias")
        heads.load_state_dict(state, strict=False)
        n = out_w.shape[0]
        with torch.no_grad():
            heads.mlp[2].weight.zero_()
            heads.mlp[2].bias.zero_()
            heads.mlp[2].weight[:n] = out_w
            heads.mlp[2].bias[:n] = out_b
        return heads

    # ------------------------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = path / f".{HEADS_WEIGHTS}.tmp"
        save_file(state, str(tmp))
        tmp.replace(path / HEADS_WEIGHTS)
        (path / HEADS_CONFIG).write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "RewardHeads":
        path = Path(path)
        for name in (HEADS_CONFIG, HEADS_WEIGHTS):
            if not (path / name).is_file():
                raise FileNotFoundError(f"no reward heads at {path}: {name} is missing")
        try:
            config = HeadsConfig(**{"to_go": False, **json.loads((path / HEADS_CONFIG).read_text())})
            state = load_file(str(path / HEADS_WEIGHTS))
        except (json.JSONDecodeError, TypeError, OSError, ValueError) as err:
            raise ValueError(f"corrupt reward heads at {path}: {err}") from err
        heads = cls(config)
        heads.load_state_dict(state)
        return heads.to(device).eval()


# ---------------------------------------------------------------------------------------- training
@dataclass
class HeadExamples:
    """Training examples: frames uint8 (F, k, H, W, 3) and per-example targets. Example i looks at
    ``frames[frame_index[i]]`` (by default example i at frames[i]): relabelled examples share their frames."""

    frames: np.ndarray
    instructions: list[str]
    reward: np.ndarray  # float32 (M,)
    success: np.ndarray  # bool (M,)
    terminated: np.ndarray  # bool (M,)
    extra: dict = field(default_factory=dict)
    frame_index: np.ndarray | None = None  # int (M,)
    to_go: np.ndarray | None = None  # float32 (M,): skills still needed; nan where unknown (no fixed goal)
    next_skill: np.ndarray | None = None  # bool (M, S): the skills one closer to the goal; all False where unknown
    # the episode before each example's chunk (heads with ``history``): example i saw
    # history_frames[first:first + count] with (first, count) = history_span[i] (its start frame, earlier chunk ends)
    history_frames: np.ndarray | None = None  # uint8 (G, H, W, 3)
    history_span: np.ndarray | None = None  # int (M, 2): (first, count)

    def __len__(self) -> int:
        return len(self.reward)

    def frames_of(self, idx: np.ndarray | torch.Tensor) -> np.ndarray:
        """The frames examples ``idx`` look at, (len(idx), k, H, W, 3)."""
        idx = np.asarray(idx)
        return self.frames[idx if self.frame_index is None else self.frame_index[idx]]

    def history_of(self, heads: "RewardHeads", idx: np.ndarray | torch.Tensor) -> torch.Tensor | None:
        """The pooled history (len(idx), hidden) examples ``idx`` give heads that read it (None for heads that do
        not): `RewardHeads.encode_history` of each example's earlier frames, max-pooled (with gradient)."""
        if not getattr(getattr(heads, "config", None), "history", False):
            return None
        if self.history_frames is None or self.history_span is None:
            raise ValueError("these heads read the episode so far, but the examples hold no history "
                             "(examples_from_episodes(..., history=True))")
        span = self.history_span[np.asarray(idx)]
        count = span[:, 1]
        steps = np.arange(count.max())
        valid = steps[None] < count[:, None]
        feats = heads.encode_history(self.history_frames[(span[:, :1] + steps[None])[valid]])
        pooled = feats.new_full((len(span), len(steps), feats.shape[1]), float("-inf"))
        pooled[torch.from_numpy(valid).to(feats.device)] = feats
        return pooled.max(dim=1).values


def _last_frames(frames: np.ndarray, end: int, k: int) -> np.ndarray:
    idx = np.maximum(np.arange(end - k, end), 0)
    return frames[idx]


# Labels of one episode's chunks for one instruction: (instruction, reward (K,), terminated (K,)), and where the
# instruction's task has a fixed goal, a fourth array: the skills still needed (K,), and a fifth: the next skills that
# bring the goal one closer from each chunk's end (K, S) bool.
LabelSet = tuple


def own_labels(episode: Mapping) -> list[LabelSet]:
    """The episode's own instruction and labels: reward as recorded, terminated = the task succeeded
    (``attrs.task_success``) and the chunk is the last one."""
    attrs, K = episode["attrs"], len(episode["reward"])
    terminated = np.zeros(K, bool)
    if K:
        terminated[-1] = bool(attrs.get("task_success", False))
    return [(str(attrs.get("instruction", "")), np.asarray(episode["reward"], np.float32), terminated)]


def examples_from_episodes(episodes: Iterable[Mapping], num_frames: int = 2,
                           labels: Callable[[Mapping], list[LabelSet]] = own_labels,
                           history: bool = False) -> HeadExamples:
    """One example per chunk of each episode and per label set that ``labels`` gives it (``envs.episodes`` schema).

    Chunk k's frames are the last ``num_frames`` frames up to its end (frames[1 + (k+1)*L - 1]); ``success`` is the
    chunk's skill succeeding (``success[k]``), whatever the instruction. ``labels``: `own_labels` (the recorded
    instruction, reward and end of the task), or more label sets per episode, e.g. hindsight labels for other
    instructions judged on the recorded simulator state (`agents.heads.scene_labels`). ``history``: also each
    chunk's episode so far (frames 0, L, ..., k*L: the start frame and the earlier chunk ends), for heads that
    read it.
    """
    frames, index, texts, rewards, successes, terms, to_go = [], [], [], [], [], [], []
    nexts: list[tuple[int, np.ndarray | None]] = []
    seen: list[np.ndarray] = []  # each episode's start frame and chunk ends, when ``history``
    spans: list[tuple[int, int]] = []
    seen_count = 0
    for ep in episodes:
        video = np.asarray(ep["frames"])
        L, K = int(ep["attrs"]["chunk_len"]), len(ep["reward"])
        first, seen_first = len(frames), seen_count
        frames.extend(_last_frames(video, 1 + (k + 1) * L, num_frames) for k in range(K))
        if history:
            seen.append(video[np.arange(K) * L])
            seen_count += K
        for text, reward, terminated, *more in labels(ep):
            if len(reward) != K or len(terminated) != K:
                raise ValueError(f"labels for {text!r}: {len(reward)} rewards / {len(terminated)} ends for {K} chunks")
            index.extend(range(first, first + K))
            spans.extend((seen_first, k + 1) for k in range(K))
            texts.extend([text] * K)
            rewards.extend(float(r) for r in reward)
            successes.extend(bool(ok) for ok in ep["success"])
            terms.extend(bool(t) for t in terminated)
            to_go.extend(np.asarray(more[0], np.float32) if more else np.full(K, np.nan, np.float32))
            nexts.append((K, np.asarray(more[1], bool) if len(more) > 1 else None))
    if not frames:
        raise ValueError("no chunks to learn from: the episodes are empty")
    width = max((n.shape[1] for _, n in nexts if n is not None), default=0)
    next_skill = None
    if width:  # label sets without next skills (own labels, tasks without a fixed goal): all False, unknown
        next_skill = np.concatenate([n if n is not None else np.zeros((K, width), bool) for K, n in nexts])
    return HeadExamples(np.stack(frames).astype(np.uint8), texts, np.asarray(rewards, np.float32),
                        np.asarray(successes, bool), np.asarray(terms, bool), frame_index=np.asarray(index, np.int64),
                        to_go=np.asarray(to_go, np.float32), next_skill=next_skill,
                        history_frames=np.concatenate(seen).astype(np.uint8) if history else None,
                        history_span=np.asarray(spans, np.int64).reshape(-1, 2) if history else None)


def examples_from_items(items: Iterable[Mapping], num_frames: int = 2) -> HeadExamples:
    """Examples from chunk items (e.g. ``ChunkDataset`` items extended with targets).

    Each item needs ``target`` (Tn, H, W, 3) frames and ``reward``; optional ``success``,
    ``terminated`` and ``instruction`` (else ``text``).
    """
    frames, texts, rewards, successes, terms = [], [], [], [], []
    for item in items:
        target = np.asarray(item["target"])
        frames.append(_last_frames(target, len(target), num_frames))
        texts.append(str(item.get("instruction", item.get("text", ""))))
        rewards.append(float(item["reward"]))
        successes.append(bool(item.get("success", False)))
        terms.append(bool(item.get("terminated", False)))
    if not frames:
        raise ValueError("no items to learn from")
    return HeadExamples(np.stack(frames).astype(np.uint8), texts, np.asarray(rewards, np.float32),
                        np.asarray(successes, bool), np.asarray(terms, bool))


def train_heads(heads: RewardHeads, data: HeadExamples | Sequence[Mapping], steps: int = 500,
                batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                weights: tuple[float, float, float] = (1.0, 1.0, 1.0), progress: bool = False) -> list[float]:
    """Fit the heads (reward MSE on normalised targets + BCE on success and termination + with ``config.to_go`` the
    skills-to-go MSE, in units of `TO_GO_SCALE`, on the examples that have it + with ``config.skills`` the
    cross-entropy of the next-skill logits against the uniform distribution over the examples' next skills).

    ``data``: HeadExamples, episode dicts or chunk items. ``progress``: a progress bar with the loss (a CPU fit of
    heads that read the episode so far takes many minutes). Returns the loss per step.
    """
    if not isinstance(data, HeadExamples):
        data = list(data)
        is_episode = bool(data) and "attrs" in data[0]
        if heads.config.history and not is_episode:
            raise ValueError("heads that read the episode so far learn from whole episodes, not chunk items")
        data = (examples_from_episodes(data, heads.config.num_frames, history=heads.config.history) if is_episode
                else examples_from_items(data, heads.config.num_frames))
    gen = torch.Generator().manual_seed(seed)
    device = heads.device
    with torch.no_grad():
        heads.reward_mean.fill_(float(data.reward.mean()))
        heads.reward_std.fill_(max(float(data.reward.std()), 1e-3))
    reward = torch.from_numpy(data.reward).to(device)
    success = torch.from_numpy(data.success.astype(np.float32)).to(device)
    term = torch.from_numpy(data.terminated.astype(np.float32)).to(device)
    to_go = torch.from_numpy(data.to_go if data.to_go is not None else np.full(len(data), np.nan, np.float32))
    to_go = to_go.to(device) / TO_GO_SCALE
    next_skill = None
    if heads.config.skills and data.next_skill is not None:
        if data.next_skill.shape[1] != heads.config.skills:
            raise ValueError(f"the examples name {data.next_skill.shape[1]} skills, the heads {heads.config.skills}")
        target = torch.from_numpy(data.next_skill.astype(np.float32))
        next_skill = (target / target.sum(1, keepdim=True).clamp(min=1)).to(device)  # rows of 0: unknown
    opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=1e-4)
    heads.train()
    losses = []
    from tqdm.auto import tqdm

    bar = tqdm(range(steps), desc="heads", unit="step", disable=not progress, mininterval=5)
    for _ in bar:
        idx = torch.randint(0, len(data), (min(batch_size, len(data)),), generator=gen)
        out = heads(torch.from_numpy(data.frames_of(idx.numpy())), [data.instructions[i] for i in idx.tolist()],
                    data.history_of(heads, idx.numpy()))
        target = (reward[idx] - heads.reward_mean) / heads.reward_std
        loss = (weights[0] * F.mse_loss(out["reward_norm"], target)
                + weights[1] * F.binary_cross_entropy_with_logits(out["success_logit"], success[idx])
                + weights[2] * F.binary_cross_entropy_with_logits(out["terminated_logit"], term[idx]))
        known = torch.isfinite(to_go[idx])
        if heads.config.to_go and known.any():
            loss = loss + F.mse_loss(out["to_go"][known] / TO_GO_SCALE, to_go[idx][known])
        if next_skill is not None:
            target = next_skill[idx]
            labelled = target.sum(1) > 0
            if labelled.any():
                logp = torch.log_softmax(out["next_skill_logits"][labelled].float(), dim=1)
                loss = loss - (target[labelled] * logp).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"reward-head training diverged (loss {value})")
        losses.append(value)
        if progress and len(losses) % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
    heads.eval()
    return losses


def predict_with_history(heads: Any, frames: Any, instructions: Sequence[str | None],
                         history: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """``heads.predict`` with the episodes' pooled history where there is one (heads that read it), else without:
    heads that read none, and stand-ins with ``predict(frames, instructions)``, are called as before history existed."""
    if history is None:
        return heads.predict(frames, instructions)
    return heads.predict(frames, instructions, history)


@torch.no_grad()
def predict_examples(heads: RewardHeads, data: HeadExamples, batch: int = 512) -> dict[str, np.ndarray]:
    """`RewardHeads.predict` on every example (with its history for heads that read it), in batches."""
    parts = []
    for lo in range(0, len(data), batch):
        idx = np.arange(lo, min(lo + batch, len(data)))
        parts.append(predict_with_history(heads, data.frames_of(idx), data.instructions[lo:lo + batch],
                                          data.history_of(heads, idx)))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class HeadsHistory:
    """The heads' view of ``num_envs`` imagined episodes so far: per episode the max of `RewardHeads.encode_history`
    over its start frame and every chunk end since (nothing for heads that read no history). `predict` judges a chunk
    with it and then adds the chunk's last frame, so chunk k is judged on frames 0, L, ..., k*L as the heads learnt
    (`examples_from_episodes(history=True)`). The env and the planners keep one beside their imagination core,
    reset, forked and stepped with it."""

    def __init__(self, heads: RewardHeads, num_envs: int):
        self.heads = heads
        reads = getattr(getattr(heads, "config", None), "history", False)
        self.pooled = torch.zeros(num_envs, heads.config.hidden, device=heads.device) if reads else None

    @torch.no_grad()
    def reset(self, ids: Sequence[int], frames: Sequence[Any]) -> None:
        """Episodes ``ids`` start at ``frames`` ((T, H, W, 3) uint8 each: the last is the start frame)."""
        if self.pooled is not None and len(ids):
            was = self.heads.training
            self.heads.eval()
            last = np.stack([np.asarray(f)[-1] for f in frames])
            self.pooled[list(ids)] = self.heads.encode_history(last)
            self.heads.train(was)

    def pooled_of(self, ids: Sequence[int]) -> torch.Tensor | None:
        """The pooled history (len(ids), hidden) of episodes ``ids`` (None for heads that read none)."""
        return None if self.pooled is None else self.pooled[list(ids)]

    def fork(self, src_ids: Sequence[int], dst_ids: Sequence[int]) -> None:
        if self.pooled is not None:
            self.pooled[list(dst_ids)] = self.pooled[list(src_ids)].clone()

    @torch.no_grad()
    def observe(self, ids: Sequence[int], frames: Any) -> None:
        """Chunks ``frames`` ((B, T, H, W, 3) uint8) ended episodes ``ids``: their last frames join the history."""
        if self.pooled is not None and len(ids):
            was = self.heads.training
            self.heads.eval()
            last = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)[:, -1]
            ids = list(ids)
            self.pooled[ids] = torch.maximum(self.pooled[ids], self.heads.encode_history(last))
            self.heads.train(was)

    def predict(self, ids: Sequence[int], frames: Any, instructions: Sequence[str | None],
                observe: bool = True) -> dict[str, np.ndarray]:
        """`RewardHeads.predict` of chunks ``frames`` of episodes ``ids`` given their history; then (``observe``)
        the chunks join it."""
        ids = list(ids)
        out = predict_with_history(self.heads, frames, instructions, self.pooled_of(ids))
        if observe:
            self.observe(ids, frames)
        return out

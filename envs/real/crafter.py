"""Crafter (a fast 2-D Minecraft-like world) as a real task suite with language actions.

Each env step is one *chunk*: the chosen skill is applied for ``chunk_len`` frames, each frame being
``frame_skip`` Crafter steps, so one move chunk walks ``chunk_len * frame_skip`` tiles. That matches the
world model, which generates a chunk of frames per action. :func:`path_and_return_episode` implements the
paper's memory protocol (walk a path, retrace it with the reverse moves, record which frames revisit
which) and :func:`free_play_episode` gives coverage data, both in the shared episode schema.
"""

from __future__ import annotations

import copy
from typing import Any

import crafter
import gymnasium
import numpy as np
from gymnasium import spaces

CRAFTER_SKILLS: tuple[str, ...] = tuple(
    "collect / interact" if name == "do" else name.replace("_", " ") for name in crafter.constants.actions
)
"""Language names of Crafter's 17 actions, in Crafter's action order (index = skill id)."""
NUM_SKILLS = len(CRAFTER_SKILLS)
MOVES: dict[int, tuple[int, int]] = {
    CRAFTER_SKILLS.index(f"move {name}"): step
    for name, step in (("left", (-1, 0)), ("right", (1, 0)), ("up", (0, -1)), ("down", (0, 1)))
}
"""Move skill id -> (dx, dy) in world tiles."""
NOOP = CRAFTER_SKILLS.index("noop")
REVERSE: dict[int, int] = {a: b for a in MOVES for b in MOVES if MOVES[a] == (-MOVES[b][0], -MOVES[b][1])}
_HOSTILE = (crafter.objects.Zombie, crafter.objects.Skeleton)
_CREATURES = (crafter.objects.Cow, crafter.objects.Arrow, *_HOSTILE)
_ALIASES = {**{s: i for i, s in enumerate(CRAFTER_SKILLS)}, **{a.replace("_", " "): i for i, a in
                                                              enumerate(crafter.constants.actions)}}


def _normalise(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").split())


class _Crafter(crafter.Env):
    """crafter.Env with a frozen day-night cycle and a peaceful mode (overrides Crafter internals).

    Both keep revisited scenes comparable: lighting does not drift, and no zombie chases the player
    into the path it must retrace.
    """

    def __init__(self, daylight: float | None, peaceful: bool, **kwargs: Any):
        super().__init__(**kwargs)
        self._fixed_daylight, self._peaceful = daylight, peaceful

    def reset(self) -> np.ndarray:
        obs = super().reset()
        if not self._peaceful:
            return obs
        for obj in self._world.objects:
            if isinstance(obj, _HOSTILE):
                self._world.remove(obj)
        return self.render()

    def _update_time(self) -> None:
        if self._fixed_daylight is None:
            super()._update_time()
        else:
            self._world.daylight = self._fixed_daylight

    def _balance_object(self, chunk: Any, objs: Any, cls: type, *args: Any) -> None:
        if not (self._peaceful and issubclass(cls, _HOSTILE)):
            super()._balance_object(chunk, objs, cls, *args)


class CrafterEnv(gymnasium.Env):
    """Crafter with chunked steps and skill (Discrete(17)) or text actions.

    ``step`` returns the chunk's last frame; ``info["frames"]`` holds all ``chunk_len`` frames and
    ``info["player_pos"]`` the player's tile at each. After death or the time limit the remaining frames
    of the chunk repeat the last one. ``daylight`` in [0, 1] freezes the day-night cycle (None: Crafter's);
    ``peaceful`` removes zombies and skeletons (Minecraft's peaceful difficulty).
    ``success`` is True when the chunk completed an achievement (collect wood, place table, ...).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, action_mode: str = "skill", chunk_len: int = 4, frame_skip: int = 1, size: int = 64,
                 daylight: float | None = None, peaceful: bool = False, max_steps: int = 10000,
                 render_mode: str | None = None):
        if action_mode not in ("skill", "text"):
            raise ValueError(f"action_mode must be 'skill' or 'text', got {action_mode!r}")
        if chunk_len < 1 or frame_skip < 1 or size < 9:
            raise ValueError(f"need chunk_len >= 1, frame_skip >= 1, size >= 9; got {chunk_len}, {frame_skip}, {size}")
        if daylight is not None and not 0.0 <= daylight <= 1.0:
            raise ValueError(f"daylight must be in [0, 1] or None, got {daylight}")
        self.action_mode, self.chunk_len, self.frame_skip, self.size = action_mode, chunk_len, frame_skip, size
        self.daylight, self.peaceful, self.max_steps, self.render_mode = daylight, peaceful, max_steps, render_mode
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        if action_mode == "skill":
            self.action_space = spaces.Discrete(NUM_SKILLS)
        else:
            charset = frozenset("".join(CRAFTER_SKILLS))
            self.action_space = spaces.Text(max(map(len, CRAFTER_SKILLS)), charset=charset)
        self._env: _Crafter | None = None
        self._obs = np.zeros((size, size, 3), np.uint8)
        self._done = False

    # -- actions ---------------------------------------------------------------------------------

    def skill_id(self, action: Any) -> int:
        """Skill id of an action in this env's mode; text also accepts Crafter's names (``move_left``, ``do``)."""
        if self.action_mode == "text":
            if not isinstance(action, str) or _normalise(action) not in _ALIASES:
                raise ValueError(f"unknown skill {action!r}; valid skills: {', '.join(CRAFTER_SKILLS)}")
            return _ALIASES[_normalise(action)]
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)) \
                or not 0 <= action < NUM_SKILLS:
            raise ValueError(f"skill action must be an int in [0, {NUM_SKILLS}), got {action!r}")
        return int(action)

    # -- gymnasium API ---------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """A seed rebuilds Crafter with that world seed; later unseeded resets draw new worlds from it."""
        super().reset(seed=seed)
        if seed is not None or self._env is None:
            world_seed = seed if seed is not None else int(self.np_random.integers(2**31 - 1))
            self._env = _Crafter(self.daylight, self.peaceful, size=(self.size, self.size), length=self.max_steps,
                                 seed=world_seed)
        self._obs, self._done = self._env.reset(), False
        return self._obs.copy(), {"player_pos": self.player_pos}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._env is None:
            raise RuntimeError("call reset() before step()")
        skill = self.skill_id(action)
        before = dict(self._env._player.achievements)
        frames, positions, reward, terminated = [], [], 0.0, False
        for _ in range(self.chunk_len):
            for _ in range(self.frame_skip):
                if self._done:
                    break
                self._obs, r, self._done, raw = self._env.step(skill)
                reward += float(r)
                terminated = terminated or raw["discount"] == 0.0
            frames.append(self._obs)
            positions.append(self.player_pos)
        after = self._env._player.achievements
        achieved = sorted(name for name, count in after.items() if count > before[name])
        info = {"frames": np.stack(frames), "player_pos": np.stack(positions), "language": CRAFTER_SKILLS[skill],
                "skill_id": skill, "reward": reward, "success": bool(achieved), "achievements": achieved,
                "inventory": dict(self._env._player.inventory)}
        return self._obs.copy(), reward, terminated, self._done and not terminated, info

    def render(self) -> np.ndarray:
        return self._obs.copy()

    # -- world queries (Crafter has no public API for these) --------------------------------------

    @property
    def player_pos(self) -> np.ndarray:
        return np.array(self._env._player.pos, dtype=np.int64)

    def path_clear(self, move: int, tiles: int, margin: int = 0) -> bool:
        """Whether ``tiles`` steps of ``move`` are walkable now (no obstacle, lava or world edge) and no
        creature is within ``margin`` tiles (square) of them, since one could wander into the path."""
        world, step = self._env._world, np.array(MOVES[move])
        for i in range(1, tiles + 1):
            tile = self.player_pos + i * step
            material, obj = world[tile]
            if obj is not None or material not in crafter.constants.walkable:
                return False
            if margin and any(isinstance(o, _CREATURES) for o in world.nearby(tile, margin)[1]):
                return False
        return True


# ------------------------------------------------------------------------------------------------
# Episodes in the shared schema


class _Recorder:
    """Accumulates chunks into the shared episode dict."""

    def __init__(self, obs: np.ndarray, pos: np.ndarray):
        self.frames, self.positions = [obs[None]], [pos[None]]
        self.skills: list[int] = []
        self.rewards: list[float] = []
        self.successes: list[bool] = []

    def add(self, info: dict) -> None:
        self.frames.append(info["frames"])
        self.positions.append(info["player_pos"])
        self.skills.append(info["skill_id"])
        self.rewards.append(info["reward"])
        self.successes.append(info["success"])

    @property
    def player_pos(self) -> np.ndarray:
        return np.concatenate(self.positions)

    def episode(self, env: CrafterEnv, revisits: np.ndarray, attrs: dict) -> dict:
        skills = np.asarray(self.skills, np.int64)
        actions = np.eye(NUM_SKILLS, dtype=np.float32)[np.repeat(skills, env.chunk_len)]
        return dict(
            frames=np.concatenate(self.frames).astype(np.uint8),
            actions=actions.reshape(-1, NUM_SKILLS),
            skill_ids=skills,
            language=[CRAFTER_SKILLS[s] for s in skills],
            reward=np.asarray(self.rewards, np.float32),
            success=np.asarray(self.successes, bool),
            revisits=np.asarray(revisits, np.int64).reshape(-1, 2),
            attrs=dict(attrs, domain="crafter", chunk_len=env.chunk_len, frame_skip=env.frame_skip),
        )


def _choose_move(env: CrafterEnv, rng: np.random.Generator, previous: int | None, margin: int) -> int:
    """A random move whose whole chunk is walkable; prefers not undoing the previous move, then moves with
    no creature within ``margin`` tiles. Boxed in (a cow behind), it waits: noop is its own reverse."""
    tiles = env.chunk_len * env.frame_skip
    for fresh_only, gap in ((True, margin), (True, 0), (False, margin), (False, 0)):
        options = [m for m in MOVES if env.path_clear(m, tiles, gap)
                   and not (fresh_only and m == REVERSE.get(previous))]
        if options:
            return int(rng.choice(options))
    return NOOP


def terrain_mask(size: int, view: tuple[int, int] = (9, 9)) -> np.ndarray:
    """(size, size) bool: the pixels of a Crafter frame that show the world around the player, without the
    player's own cell (its facing changes on a revisit) and without the inventory bar under the view.

    Crafter draws a ``view`` grid of square units (``size // view`` pixels, centred): the top rows are the
    local view with the player in its centre unit, the last ``ceil(items / view[0])`` rows the inventory.
    """
    unit = size // view[0]
    item_rows = -(-len(crafter.constants.items) // view[0])
    local = (view[0], view[1] - item_rows)
    border = (size - unit * view[0]) // 2
    mask = np.zeros((size, size), bool)
    mask[border: border + local[1] * unit, border: border + local[0] * unit] = True  # rows (y), cols (x)
    py, px = border + (local[1] // 2) * unit, border + (local[0] // 2) * unit
    mask[py: py + unit, px: px + unit] = False
    return mask


def mirror_revisits(player_pos: np.ndarray) -> np.ndarray:
    """Pairs (i, j) with j = 2M - i > M (M = turning frame) where the return stands where the outward walk did.

    Pairs broken by a cow stepping into the path (the walk is then shifted by a tile) are left out.
    """
    turn = (len(player_pos) - 1) // 2
    i = np.arange(turn - 1, -1, -1)
    j = 2 * turn - i
    keep = (player_pos[i] == player_pos[j]).all(axis=1)
    return np.stack([i[keep], j[keep]], axis=1).astype(np.int64)


def _walk_and_return(env: CrafterEnv, rng: np.random.Generator, n_moves: int,
                     margin: int) -> tuple[_Recorder, list[int]]:
    recorder, outward = _Recorder(env.render(), env.player_pos), []
    for _ in range(n_moves):
        outward.append(_choose_move(env, rng, outward[-1] if outward else None, margin))
        recorder.add(env.step(outward[-1])[-1])
    for move in reversed(outward):
        recorder.add(env.step(REVERSE.get(move, NOOP))[-1])
    return recorder, outward


def path_and_return_episode(seed: int, n_moves: int = 8, chunk_len: int = 4, frame_skip: int = 1, *,
                            daylight: float | None = 1.0, peaceful: bool = True, margin: int = 2, tries: int = 4,
                            size: int = 64) -> dict:
    """The paper's memory protocol: ``n_moves`` random move chunks, then the same moves reversed.

    Each outward chunk is planned to be fully walkable, so the exact reverse retraces it and frame
    ``2M - i`` of the return shows the scene of frame ``i`` (M = ``n_moves * chunk_len``), up to moving
    creatures (cows), the player's facing and the inventory bar. A cow can still step into the path and
    shift the rest of the walk by a tile, so up to ``tries`` walks are drawn in copies of the same world
    and the first one with the most revisit pairs is kept. By default daylight is frozen at full day and
    the world is peaceful, so lighting does not drift and no zombie chases the player into the path.
    """
    if n_moves < 1 or tries < 1:
        raise ValueError(f"n_moves and tries must be >= 1, got {n_moves}, {tries}")
    start = CrafterEnv("skill", chunk_len, frame_skip, size, daylight, peaceful)
    start.reset(seed=seed)
    rng, attempts = np.random.default_rng(seed), []
    for _ in range(tries):
        recorder, outward = _walk_and_return(copy.deepcopy(start), rng, n_moves, margin)
        attempts.append((recorder, outward, mirror_revisits(recorder.player_pos)))
        if len(attempts[-1][2]) == n_moves * chunk_len:
            break
    recorder, outward, revisits = max(attempts, key=lambda attempt: len(attempt[2]))
    path = ", ".join(CRAFTER_SKILLS[m] for m in outward)
    attrs = dict(seed=seed, task="path_and_return",
                 instruction=f"take the path {path}, then retrace it back to the start")
    return recorder.episode(start, revisits, attrs)


def free_play_episode(seed: int, num_chunks: int = 16, policy: str = "random", chunk_len: int = 4,
                      frame_skip: int = 1, *, daylight: float | None = None, peaceful: bool = False,
                      size: int = 64) -> dict:
    """Coverage episode: ``policy="random"`` draws a uniform skill per chunk; stops early on death.

    ``revisits`` is empty: free play does not control when a place is seen again.
    """
    if policy != "random":
        raise ValueError(f"unknown policy {policy!r}; available: 'random'")
    env = CrafterEnv("skill", chunk_len, frame_skip, size, daylight, peaceful)
    obs, info = env.reset(seed=seed)
    rng, recorder = np.random.default_rng(seed), _Recorder(obs, info["player_pos"])
    for _ in range(num_chunks):
        *_, terminated, truncated, info = env.step(int(rng.integers(NUM_SKILLS)))
        recorder.add(info)
        if terminated or truncated:
            break
    attrs = dict(seed=seed, task="free_play", instruction="explore the world with random skills")
    return recorder.episode(env, np.zeros((0, 2), np.int64), attrs)

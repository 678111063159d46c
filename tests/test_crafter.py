"""Crafter task suite and the path-and-return memory protocol on the real simulator (issue 9)."""

from __future__ import annotations

import numpy as np
import pytest

from envs.real.crafter import (
    CRAFTER_SKILLS,
    MOVES,
    NOOP,
    NUM_SKILLS,
    REVERSE,
    CrafterEnv,
    free_play_episode,
    path_and_return_episode,
)

N_MOVES, CHUNK = 6, 4
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def episodes() -> list[dict]:
    return [path_and_return_episode(seed, n_moves=N_MOVES, chunk_len=CHUNK) for seed in SEEDS]


def check_schema(ep: dict, chunk_len: int) -> None:
    k = len(ep["skill_ids"])
    assert set(ep) == {"frames", "actions", "skill_ids", "language", "reward", "success", "revisits", "attrs"}
    assert ep["frames"].dtype == np.uint8 and ep["frames"].shape == (1 + k * chunk_len, 64, 64, 3)
    assert ep["actions"].dtype == np.float32 and ep["actions"].shape == (k * chunk_len, NUM_SKILLS)
    assert ep["skill_ids"].dtype == np.int64
    np.testing.assert_array_equal(ep["actions"].argmax(1), np.repeat(ep["skill_ids"], chunk_len))
    assert (ep["actions"].sum(1) == 1).all()
    assert ep["language"] == [CRAFTER_SKILLS[s] for s in ep["skill_ids"]]
    assert ep["reward"].dtype == np.float32 and ep["reward"].shape == (k,)
    assert ep["success"].dtype == bool and ep["success"].shape == (k,)
    assert ep["revisits"].dtype == np.int64 and ep["revisits"].ndim == 2 and ep["revisits"].shape[1] == 2
    attrs = ep["attrs"]
    assert attrs["domain"] == "crafter" and attrs["chunk_len"] == chunk_len and attrs["frame_skip"] == 1
    assert isinstance(attrs["seed"], int) and isinstance(attrs["task"], str) and isinstance(attrs["instruction"], str)


def test_skills_follow_crafter_action_order():
    import crafter

    assert len(CRAFTER_SKILLS) == len(crafter.constants.actions) == 17
    assert CRAFTER_SKILLS[:6] == ("noop", "move left", "move right", "move up", "move down", "collect / interact")
    assert CRAFTER_SKILLS[7] == "place stone"


def test_path_and_return_schema(episodes):
    for seed, ep in zip(SEEDS, episodes):
        check_schema(ep, CHUNK)
        assert ep["attrs"]["task"] == "path_and_return" and ep["attrs"]["seed"] == seed
        outward, back = ep["skill_ids"][:N_MOVES], ep["skill_ids"][N_MOVES:]
        assert all(s in MOVES or s == NOOP for s in outward)
        np.testing.assert_array_equal(back, [REVERSE.get(int(s), NOOP) for s in outward[::-1]])


def test_revisit_pairs_mirror_the_turn(episodes):
    turn = N_MOVES * CHUNK
    for ep in episodes:
        i, j = ep["revisits"].T
        assert len(i) >= turn // 2  # a wandering cow may break a few pairs, never most
        assert (i < turn).all() and (j > turn).all() and (i + j == 2 * turn).all()


def test_return_frames_match_outward_frames(episodes):
    """The protocol is sound: the real simulator shows the same scene at visit and revisit."""
    for ep in episodes:
        frames = ep["frames"].astype(np.int16)
        i, j = ep["revisits"].T
        equal = (frames[i] == frames[j]).all(-1).mean(axis=(1, 2))
        revisit_mad = np.abs(frames[i] - frames[j]).mean()
        # The same outward frames against return frames of *other* places (shift by half the pairs).
        other_mad = np.abs(frames[i] - frames[np.roll(j, len(j) // 2)]).mean()
        assert equal.min() > 0.9, equal.min()  # only the player's facing, cows and the inventory bar differ
        assert revisit_mad < 4.0 and other_mad > 2 * revisit_mad, (revisit_mad, other_mad)


def test_same_seed_same_episode(episodes):
    again = path_and_return_episode(SEEDS[0], n_moves=N_MOVES, chunk_len=CHUNK)
    np.testing.assert_array_equal(again["frames"], episodes[0]["frames"])
    np.testing.assert_array_equal(again["revisits"], episodes[0]["revisits"])


def test_free_play_schema():
    ep = free_play_episode(3, num_chunks=5, chunk_len=2)
    check_schema(ep, 2)
    assert ep["attrs"]["task"] == "free_play" and len(ep["skill_ids"]) == 5 and ep["revisits"].shape == (0, 2)
    with pytest.raises(ValueError, match="unknown policy"):
        free_play_episode(3, policy="expert")


def test_text_actions_step_chunks():
    env = CrafterEnv("text", chunk_len=3, frame_skip=2)
    obs, info = env.reset(seed=5)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    assert env.action_space.contains("move left")
    obs, reward, terminated, truncated, info = env.step("Move_Left")
    assert info["language"] == "move left" and info["skill_id"] == 1
    assert info["frames"].shape == (3, 64, 64, 3) and info["frames"].dtype == np.uint8
    np.testing.assert_array_equal(obs, info["frames"][-1])
    assert info["player_pos"].shape == (3, 2)
    assert isinstance(reward, float) and not terminated and not truncated and info["success"] is False
    assert env.step("do")[-1]["language"] == "collect / interact"
    with pytest.raises(ValueError, match="valid skills: noop, move left"):
        env.step("fly up")
    with pytest.raises(ValueError, match="valid skills"):
        env.step(3)


def test_skill_mode_rejects_bad_actions():
    env = CrafterEnv("skill")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    with pytest.raises(ValueError, match=r"\[0, 17\)"):
        env.skill_id(17)
    with pytest.raises(ValueError, match=r"\[0, 17\)"):
        env.skill_id("move left")
    with pytest.raises(ValueError, match="action_mode"):
        CrafterEnv("continuous")

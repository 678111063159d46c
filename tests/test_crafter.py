"""Crafter: the task suite, the path-and-return memory protocol, and its wiring through collect, train and
evaluate (issue 9)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

import worldmodel.action
from envs.data import ChunkDataset, EpisodeDataset
from envs.episodes import episode_key, file_attrs, list_episodes, read_episode
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
from experiments import evaluate, text_cache, train
from experiments.collect import CollectConfig, collect, episode_plan, shard_path
from worldmodel import SlowFastVGen
from worldmodel.config import from_preset

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


# ------------------------------------------------------------------------------------------------
# Wiring: experiments.collect domain=crafter -> envs.data -> experiments.train / evaluate

ROOT = Path(__file__).resolve().parents[1]
COLLECT = ["domain=crafter", "num_episodes=3", "episodes_per_shard=2", "workers=1", "seed=0",
           "play_chunks=6", "env.size=32", "env.n_moves=3"]  # episodes 0, 1: path_and_return; 2: free_play


def _compose(name: str, overrides: list[str]) -> DictConfig:
    """The config that ``python -m experiments.<name> OVERRIDES`` runs with."""
    with initialize_config_dir(config_dir=str(ROOT / "experiments" / "conf"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def _collect_config(out: Path, *extra: str) -> CollectConfig:
    return CollectConfig(**OmegaConf.to_container(_compose("collect", [f"out_dir={out}", *COLLECT, *extra])))


@pytest.fixture(scope="module")
def crafter_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("crafter")
    assert collect(_collect_config(out))["new_episodes"] == 3
    return out


def test_collect_crafter_reads_back_through_the_datasets(crafter_dir):
    cfg = _collect_config(crafter_dir)
    assert [list_episodes(shard_path(crafter_dir, s)) for s in (0, 1)] == \
        [[episode_key(0), episode_key(1)], [episode_key(2)]]
    assert file_attrs(shard_path(crafter_dir, 0))["skills"] == list(CRAFTER_SKILLS)
    for i in range(3):
        ep = read_episode(shard_path(crafter_dir, i // 2), episode_key(i))
        assert (ep["attrs"]["task"], ep["attrs"]["seed"]) == episode_plan(cfg, i)
        assert ep["frames"].shape == (1 + 6 * 4, 32, 32, 3) and ep["actions"].shape == (6 * 4, NUM_SKILLS)
        assert (len(ep["revisits"]) > 0) == (ep["attrs"]["task"] == "path_and_return")

    chunks = ChunkDataset(crafter_dir, context_frames=2, new_frames=2)
    item = chunks[0]
    assert len(chunks) == 3 * 6
    assert item["context"].shape == (2, 32, 32, 3) and item["target"].shape == (2, 32, 32, 3)
    assert item["action"].shape == (2, NUM_SKILLS) and item["text"] in CRAFTER_SKILLS
    runs = EpisodeDataset(crafter_dir, context_frames=2, new_frames=2, num_chunks=3)
    assert len(runs) == 3 * 2 and runs[0]["frames"].shape == (2 + 3 * 2, 32, 32, 3)
    assert runs[0]["actions"].shape == (3, 2, NUM_SKILLS)


def test_collect_crafter_resumes_only_missing_shards(crafter_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(crafter_dir, out)
    cfg = _collect_config(out)
    first, second = shard_path(out, 0), shard_path(out, 1)
    stamp, before = first.stat().st_mtime_ns, read_episode(second, episode_key(2))
    second.unlink()
    summary = collect(cfg)
    assert (summary["skipped_episodes"], summary["new_episodes"]) == (2, 1) and first.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(read_episode(second, episode_key(2))["frames"], before["frames"])  # (seed, i)
    with pytest.raises(ValueError, match="other settings"):
        collect(_collect_config(out, "env.n_moves=4"))
    with pytest.raises(ValueError, match="valid crafter tasks"):
        CollectConfig(domain="crafter", tasks={"play": 1})


def test_train_and_evaluate_a_tiny_crafter_model(crafter_dir, tmp_path, monkeypatch):
    """The GPU machine's path: a text cache of the Crafter vocabulary instead of MiniLM, then train and
    evaluate full vs no Temp-LoRA (SRC from the episodes' revisit pairs)."""
    assert from_preset("crafter").action_type == "text" and from_preset("crafter").frame_size == 64
    cache = tmp_path / "text_cache.safetensors"
    monkeypatch.setattr(sys, "argv", ["text_cache", "--out", str(cache), "--vocab", "crafter", "--preset", "tiny"])
    text_cache.main()

    def no_text_model(spec):
        raise OSError("no text model on this machine")

    monkeypatch.setattr(worldmodel.action, "load_text_encoder", no_text_model)
    phases = [f"phases.{p}.{k}" for p in ("vae", "slow", "slow_fast") for k in ("steps=2", "batch_size=2")]
    common = [f"data.source={crafter_dir}", "data.episode_chunks=2", f"text_cache={cache}", "progress=false", *phases]
    with pytest.raises(ValueError, match="17-d action vectors but the model takes action_dim=5"):
        train.run(_compose("train", ["preset=tiny", f"out_dir={tmp_path / 'vector'}", *common]))
    model_dir = train.run(_compose("train", ["preset=tiny", "+model.action_type=text",
                                             f"out_dir={tmp_path / 'run'}", *common]))
    assert SlowFastVGen.from_pretrained(model_dir).config.action_type == "text"

    result = evaluate.main(["--model", str(model_dir), "--data", str(crafter_dir), "--episodes", "1", "--steps", "1",
                            "--variants", "full,no_temp_lora", "--no-video", "--quiet", "--out", str(tmp_path / "eval")])
    assert "path_and_return" in result["settings"]["tasks"]  # the default tasks: every domain's memory tasks
    assert result["reference"]["src"]["n"] == 1
    for variant in ("full", "no_temp_lora"):
        assert result["variants"][variant]["metrics"]["src"]["n"] == 1
    assert result["variants"]["full"]["fast_update_ms"] > 0
    for variant in ("full", "no_temp_lora"):  # the Crafter memory measure: out-of-context revisits, terrain only
        assert result["variants"][variant]["metrics"]["psnr_revisit_terrain"]["n"] == 1
    assert "Crafter memory benchmark" in (tmp_path / "eval" / "table2.md").read_text()


def test_terrain_psnr_of_out_of_context_revisits():
    """Crafter's memory measure scores only revisits whose first visit is out of the model's context, and
    only the terrain: the inventory bar and the player's cell may differ freely."""
    from envs.real.crafter import terrain_mask
    from evaluation.episodes import EvalEpisode, out_of_context_revisits
    from evaluation.scoring import crafter_revisit_psnr

    # context 2, chunks of 2: frame 7 is made in the chunk of frames 7-8 with frames 5-6 given
    pairs = np.array([[1, 7], [5, 7], [6, 8], [2, 3], [0, 4]])
    assert out_of_context_revisits(pairs, 2, 2).tolist() == [[1, 7], [0, 4]]  # frame 0 is out of 3-4's context 1-2

    mask = terrain_mask(64)
    assert mask.shape == (64, 64) and not mask[49:].any() and mask[:49, :63].sum() == 49 * 63 - 7 * 7
    assert not mask[21:28, 28:35].any()  # the player's unit in the centre of the 9 x 7 local view
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)
    ep = EvalEpisode("e", "path_and_return", frames, np.zeros((8, 5), np.float32), ["move left"], 2, pairs)
    video = frames.copy()
    video[:, ~mask] = 0  # inventory bar and player cell differ everywhere
    video[8] = 0  # frame 8 revisits frame 6, which was in context: not scored
    assert crafter_revisit_psnr(video, ep, 2, 2) == float("inf")
    video[[4, 7], 10:20, 10:20] = 0  # the terrain of the out-of-context revisits differs
    assert np.isfinite(crafter_revisit_psnr(video, ep, 2, 2))
    ep.revisits = np.array([[5, 7]])
    assert np.isnan(crafter_revisit_psnr(video, ep, 2, 2))  # no out-of-context pair

"""Reward / success / termination heads: learn a known reward, use the instruction, persist."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.synthetic import random_episodes
from worldmodel.heads import (HeadsConfig, RewardHeads, examples_from_episodes, examples_from_items,
                              instruction_features, train_heads)

SIDES = {"look at the left half": slice(0, 8), "look at the right half": slice(8, 16)}




def labelled_episodes(num: int, seed: int) -> list[dict]:
    """Synthetic episodes whose chunk reward is a known function of the chunk's last frame and the
    instruction: the brightness of the half the instruction names. Success: reward above 0.35."""
    episodes = random_episodes(num, 4, seed=seed, frame_size=16, chunk_len=2)
    rng = np.random.default_rng(seed)
    for ep in episodes:
        text = list(SIDES)[int(rng.integers(2))]
        last = ep["frames"][2::2]  # chunk k ends at frame 2 + 2k
        ep["reward"] = (last[:, :, SIDES[text]].mean(axis=(1, 2, 3)) / 255.0).astype(np.float32)
        ep["success"] = ep["reward"] > 0.35
        ep["attrs"] = {**ep["attrs"], "instruction": text, "task_success": bool(ep["success"][-1])}
    return episodes


def test_heads_learn_a_known_reward_that_depends_on_the_instruction():
    train = examples_from_episodes(labelled_episodes(120, seed=1), num_frames=1)
    test = examples_from_episodes(labelled_episodes(40, seed=2), num_frames=1)
    assert len(train) == 480 and train.frames.shape == (480, 1, 16, 16, 3)
    assert train.terminated.sum() == sum(1 for k in range(480) if k % 4 == 3 and train.success[k])
    torch.manual_seed(0)
    heads = RewardHeads(HeadsConfig(frame_size=16, num_frames=1, channels=(16, 32), text_dim=32, hidden=64))
    history = train_heads(heads, train, steps=400, batch_size=32, lr=3e-3)
    assert np.mean(history[-20:]) < 0.5 * np.mean(history[:20])
    pred = heads.predict(test.frames, test.instructions)
    resid = pred["reward"] - test.reward
    r2 = 1 - resid.var() / test.reward.var()
    assert r2 > 0.8, r2
    assert np.mean((pred["success"] > 0.5) == test.success) > 0.85
    # the same frames under the other instruction get the other half's brightness
    other = [next(t for t in SIDES if t != s) for s in test.instructions]
    swapped = heads.predict(test.frames, other)["reward"]
    truth = np.array([test.frames[i, -1][:, SIDES[o]].mean() / 255 for i, o in enumerate(other)])
    assert np.corrcoef(swapped, truth)[0, 1] > 0.8


def test_heads_save_load_and_bad_input(tmp_path):
    heads = RewardHeads(HeadsConfig(frame_size=8, channels=(4,), text_dim=8, hidden=4))
    frames = np.random.default_rng(0).integers(0, 256, (3, 2, 16, 16, 3), dtype=np.uint8)  # resized to 8x8
    before = heads.predict(frames, ["a", "b", None])
    heads.save_pretrained(tmp_path / "heads")
    loaded = RewardHeads.from_pretrained(tmp_path / "heads")
    after = loaded.predict(frames, ["a", "b", None])
    for key in ("reward", "success", "terminated"):
        np.testing.assert_array_equal(before[key], after[key])
    with pytest.raises(FileNotFoundError, match="heads.json"):
        RewardHeads.from_pretrained(tmp_path / "missing")
    with pytest.raises(TypeError, match="uint8"):
        heads.predict(frames.astype(np.float32), ["a", "b", "c"])
    with pytest.raises(ValueError, match="instructions"):
        heads.predict(frames, ["a"])
    feats = instruction_features(["open the drawer", "Open the  drawer", "", None], 64)
    assert torch.equal(feats[0], feats[1]) and feats[2].abs().sum() == 0 and feats[0].norm() == pytest.approx(1.0)
    items = [{"target": frames[i], "reward": float(i), "text": "go", "success": i > 0} for i in range(3)]
    ex = examples_from_items(items, num_frames=2)
    assert ex.frames.shape == (3, 2, 16, 16, 3) and ex.instructions == ["go"] * 3 and ex.success.tolist() == [0, 1, 1]

"""Imagined outcome agreement (issue 14): the heads judge the imagined rollout of the expert's skills (tiny model,
random heads, CPU scene)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from evaluation import outcome
from experiments import evaluate
from worldmodel.heads import HeadsConfig, RewardHeads

FAST = ["--model", "tiny", "--steps", "2", "--threads", "1", "--seeds", "1"]


def test_missing_heads_is_a_clear_message(tmp_path):
    with pytest.raises(SystemExit, match="no success head to judge with"):
        evaluate.main(["outcome", *FAST, "--tasks", "task1_open", "--out", str(tmp_path)])


def test_outcome_end_to_end_tiny(tmp_path):
    torch.manual_seed(0)
    RewardHeads(HeadsConfig(frame_size=32)).save_pretrained(tmp_path / "heads")
    out = tmp_path / "out"
    result = evaluate.main(["outcome", *FAST, "--tasks", "task2_unlock_and_lock", "--heads", str(tmp_path / "heads"),
                            "--out", str(out)])
    data = json.loads((out / "outcome.json").read_text())
    kinds = [e["kind"] for e in data["episodes"]]
    assert kinds == ["expert", "expert without its last step"]
    full, cut = data["episodes"]
    assert full["real_success"] is True and cut["real_success"] is False and cut["chunks"] < full["chunks"]
    for key in ("real_success", "heads_on_real_agreement", "imagined_agreement", "p_done_imagined",
                "chunk_success_agreement"):
        value = result["summary"]["all"][key]
        assert math.isfinite(value) and 0 <= value <= 1, key
    assert result["summary"]["all"]["real_success"] == 0.5
    md = (out / "outcome.md").read_text()
    assert "| task2_unlock_and_lock | 2 |" in md and "python -m experiments.evaluate outcome" in md


def test_the_heads_judge_the_imagined_frames():
    """Two episodes with the same real frames and instruction: the verdict follows the imagined last chunk."""
    class Bright:  # P(done) = the mean brightness of the frames it is shown
        config = HeadsConfig(frame_size=8, num_frames=1)

        def predict(self, frames, texts):
            p = np.asarray(frames, np.float64).reshape(len(frames), -1).mean(1) / 255
            return {"terminated": p, "success": p, "reward": p}

    real = np.zeros((3, 8, 8, 3), np.uint8)
    eps = [outcome.RealEpisode("task1_open", 0, "expert", "open the drawer", [0], real, np.zeros((2, 5)), [True], True,
                               imagined=np.full((2, 8, 8, 3), v, np.uint8)) for v in (255, 0)]
    outcome.judge(Bright(), eps, new_frames=2, threshold=0.5)
    assert [e.verdicts["done_imagined"] for e in eps] == [True, False]
    assert [e.verdicts["done_real_heads"] for e in eps] == [False, False]
    s = outcome.summarize_outcomes(eps)["all"]
    assert (s["imagined_agreement"], s["heads_on_real_agreement"], s["chunk_success_agreement"]) == (0.5, 0.0, 0.5)


def test_heads_that_read_history_judge_each_rollout_on_its_own_past():
    """History heads: the imagined verdict reads the start frame and the imagined chunk ends before the last chunk,
    the real one the real chunk ends."""
    torch.manual_seed(0)
    heads = RewardHeads(HeadsConfig(frame_size=8, num_frames=1, channels=(4,), text_dim=8, hidden=4, history=True))
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)  # 2 chunks of 2 frames
    imagined = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    e = outcome.RealEpisode("task1_open", 0, "expert", "open the drawer", [0, 1], real, np.zeros((4, 5)), [True] * 2,
                            True, imagined=imagined)
    outcome.judge(heads, [e], new_frames=2, threshold=0.5)
    with torch.no_grad():
        past = {"imagined": torch.maximum(heads.encode_history(real[:1]), heads.encode_history(imagined[1:2])),
                "real": torch.maximum(heads.encode_history(real[:1]), heads.encode_history(real[2:3]))}
    want_imagined = heads.predict(imagined[None, -1:], ["open the drawer"], past["imagined"])["terminated"][0]
    want_real = heads.predict(real[None, -1:], ["open the drawer"], past["real"])["terminated"][0]
    assert e.verdicts["p_done_imagined"] == pytest.approx(float(want_imagined), rel=1e-5)
    assert e.verdicts["p_done_real"] == pytest.approx(float(want_real), rel=1e-5)


def test_random_skill_sequences_check_the_heads_false_positives(tmp_path):
    torch.manual_seed(0)
    RewardHeads(HeadsConfig(frame_size=32)).save_pretrained(tmp_path / "heads")
    args = ["outcome", *FAST, "--tasks", "task1_open", "--no-truncated", "--random-plans", "2", "--heads",
            str(tmp_path / "heads")]
    result = evaluate.main([*args, "--out", str(tmp_path / "a")])
    kinds = [e["kind"] for e in result["episodes"]]
    assert kinds == ["expert", "random skills", "random skills"]
    plan_len = result["episodes"][0]["chunks"]  # the expert repeats skills: at least the plan's length
    assert all(e["chunks"] == 2 for e in result["episodes"][1:]) and plan_len >= 2  # task 1's plan has 2 steps
    assert {"all, expert", "all, random skills"} <= set(result["summary"])
    assert result["summary"]["all, random skills"]["episodes"] == 2
    again = evaluate.main([*args, "--out", str(tmp_path / "b")])  # the same random sequences every run
    assert [e["skills"] for e in again["episodes"]] == [e["skills"] for e in result["episodes"]]
    assert "| all, random skills | 2 |" in (tmp_path / "a" / "outcome.md").read_text()

"""The action test (issue 14): two skills from the same real start, imagined vs real (tiny model, CPU scene)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evaluation import action_test
from evaluation.action_test import pair_score
from experiments import evaluate

FAST = ["--model", "tiny", "--steps", "2", "--threads", "1", "--starts", "1",
        "--skills", "open the drawer;open the window"]


def test_pair_score_hand_computed():
    """The real pair differs in a 2x2 square of a 4x4 frame (25% of the pixels)."""
    real_a = np.zeros((1, 4, 4, 3), np.uint8)
    real_b = real_a.copy()
    real_b[0, :2, :2] = 90
    same = pair_score(real_a, real_b, real_a, real_a)  # identical imagined videos: no difference anywhere
    assert (same["region_fraction"], same["real_inside"], same["inside"], same["outside"], same["iou"]) == (25.0, 90.0,
                                                                                                           0.0, 0.0, 0.0)
    imag_b = real_a.copy()
    imag_b[0, :2, :2] = 40  # differs where the real pair does
    imag_b[0, 3, 3] = 10  # and a little (under the threshold) elsewhere
    s = pair_score(real_a, real_b, real_a, imag_b)
    assert s["inside"] == 40.0 and s["outside"] == pytest.approx(10 / 12) and s["iou"] == 1.0
    assert s["contrast"] == pytest.approx(40 - 10 / 12)
    wrong = real_a.copy()
    wrong[0, 2:, 2:] = 40  # differs as much, but where the real pair does not
    w = pair_score(real_a, real_b, real_a, wrong)
    assert (w["inside"], w["outside"], w["iou"]) == (0.0, pytest.approx(40 * 4 / 12), 0.0)


def test_unknown_skill_or_task_is_refused(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["action-test", "--skills", "open the drawer;fly away"])
    assert "unknown skill 'fly away'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["action-test", "--tasks", "no_such_task"])
    assert "unknown task" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["action-test", "--skills", "open the drawer;open the drawer"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("action_test")
    return evaluate.main(["action-test", *FAST, "--out", str(out)]), out


def test_action_test_end_to_end_tiny(tiny_run):
    """The real scene and the imagination core together: files written, every score finite, and the two
    skills' imagined videos differ (the score sees the action: with one action for both they would be equal)."""
    result, out = tiny_run
    data = json.loads((out / "action_test.json").read_text())
    assert len(data["pairs"]) == 1 and len(data["controls"]) == 2
    pair = data["pairs"][0]
    assert (pair["a"], pair["b"]) == ("open the drawer", "open the window")
    for key in action_test.SCORES:
        assert math.isfinite(result["summary"]["pairs"][key]["mean"]), key
        assert math.isfinite(result["summary"]["noise_control"][key]["mean"]), key
    assert pair["region_fraction"] > 0  # the real skills move the arm differently
    assert pair["inside"] + pair["outside"] > 0  # the imagined skills differ too
    md = (out / "action_test.md").read_text()
    assert "python -m experiments.evaluate action-test" in md and "| two skills, same noise |" in md
    assert (out / "action_test.png").stat().st_size > 1000


def test_same_action_gives_no_difference(tmp_path, monkeypatch):
    """Both skills given the first skill's action: the imagined pair is identical (same noise), so the score
    is 0, unlike the run above: the score reflects the action and nothing else."""
    real_model_action = action_test.model_action

    def first_action_for_all(model, texts, vectors):
        return real_model_action(model, [texts[0]] * len(texts), np.repeat(vectors[:1], len(vectors), axis=0))

    monkeypatch.setattr(action_test, "model_action", first_action_for_all)
    result = evaluate.main(["action-test", *FAST, "--out", str(tmp_path)])
    pair = result["pairs"][0]
    assert pair["region_fraction"] > 0 and pair["inside"] == 0.0 and pair["outside"] == 0.0 and pair["iou"] == 0.0

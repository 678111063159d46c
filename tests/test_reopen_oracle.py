"""experiments.reopen_oracle: the reopen is generated after a real past, and the oracle's Θ learns the answer."""

import json

import numpy as np
import pytest

from envs.episodes import episode_key, write_episodes
from test_evaluate import _cube_episode  # tests/ is on sys.path (pytest's default import mode)


def test_reopen_is_generated_after_a_real_past_and_the_oracle_changes_it(tmp_path):
    """Frames before the free chunk are the real ones; from it on the model's. The oracle's Θ (learned on the real
    reopen chunk) changes what is drawn there against the same rollout at lr 1e-12 (guards: the oracle's update
    skipped, Θ not applied)."""
    from evaluation.episodes import load_h5_episodes
    from experiments import reopen_oracle
    from worldmodel.loading import load_model

    write_episodes(tmp_path / "eval.h5", {episode_key(i): _cube_episode(i) for i in range(2)})
    report = reopen_oracle.main(["--data", str(tmp_path), "--model", "tiny", "--episodes", "2", "--threads", "1",
                                 "--settings", "phi", "oracle:3e-2,5,1", "--out", str(tmp_path / "out")])
    saved = json.loads((tmp_path / "out" / "reopen_oracle.json").read_text())
    assert saved["results"].keys() == {"phi", "oracle:3e-2,5,1"} and len(saved["results"]["phi"]["correct"]) == 2
    model, _ = load_model("tiny", device="cpu")
    model.eval()
    episodes = load_h5_episodes(str(tmp_path), ["memory_drawer"], 2, 1)
    free_from = report["free_from_chunk"]
    assert free_from == [reopen_oracle.last_hidden_frame(e) // model.config.new_frames for e in episodes]
    phi = reopen_oracle.roll(model, episodes, free_from, False, None, 4, 0)
    oracle, overrides = reopen_oracle.parse_setting("oracle:3e-2,5,1")
    learned = reopen_oracle.roll(model, episodes, free_from, oracle, overrides, 4, 0)
    still = reopen_oracle.roll(model, episodes, free_from, oracle, {**overrides, "lr": 1e-12}, 4, 0)
    for e, k, a, b, c in zip(episodes, free_from, phi, learned, still):
        start = 1 + k * model.config.new_frames
        assert np.array_equal(a[:start], e.frames[:start]) and np.array_equal(b[:start], e.frames[:start])
        assert not np.array_equal(a[start:], e.frames[start:])
        assert np.abs(b[start:].astype(int) - c[start:].astype(int)).mean() > 1.0, "Θ changed nothing at the reopen"
    with pytest.raises(ValueError, match="setting"):
        reopen_oracle.parse_setting("oracle:1e-3,2")

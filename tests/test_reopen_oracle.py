"""experiments.reopen_oracle: the reopen is generated after a real past, and the oracle's Θ learns the answer."""

import json

import numpy as np
import pytest
from PIL import Image

from envs.episodes import episode_key, write_episodes
from evaluation.videos import LINE_HEIGHT
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
                                 "--settings", "phi", "oracle:3e-2,5,1", "--sheet", "1",
                                 "--out", str(tmp_path / "out")])
    saved = json.loads((tmp_path / "out" / "reopen_oracle.json").read_text())
    assert saved["results"].keys() == {"phi", "oracle:3e-2,5,1"} and len(saved["results"]["phi"]["correct"]) == 2
    model, _ = load_model("tiny", device="cpu")
    model.eval()
    episodes = load_h5_episodes(str(tmp_path), ["memory_drawer"], 2, 1)
    free_from = report["free_from_chunk"]
    assert free_from == [reopen_oracle.last_hidden_frame(e) // model.config.new_frames for e in episodes]
    # --sheet 1: the first reopen's rows (real, phi, oracle), 8 tiles each from the frame before the reopen chunk
    sheet = np.asarray(Image.open(tmp_path / "out" / "reopen_sheet.png"))
    before = episodes[0].frames[free_from[0] * model.config.new_frames].repeat(2, 0).repeat(2, 1)  # tiles at 2x
    tile = before.shape[0] + LINE_HEIGHT + 4  # a one-line caption under each
    assert sheet.shape[:2] == (3 * tile, 8 * before.shape[1])
    assert np.array_equal(sheet[: before.shape[0], : before.shape[1]], before)
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


def test_hide_setting_learns_the_hiding_chunk_alone(tmp_path, monkeypatch):
    """``hide:`` Θ learns exactly one real chunk per episode, the one that makes the first frame of the last hidden
    run (guards: every real chunk learned, or the first hidden run taken), and that write reaches the reopen."""
    from evaluation.episodes import load_h5_episodes
    from experiments import reopen_oracle
    from worldmodel.loading import load_model
    from worldmodel.memory import BatchedTempLoRA

    eps = {}
    for i in range(2):
        ep = _cube_episode(i)
        ep["cube_pixel"][:3, 3] = 1.0  # shown in the open drawer at frames 0-2, hidden from 3 until the reopen (7)
        ep["cube_pixel"][4, 3] = float(i)  # episode 1: seen once more at frame 4, hidden again from 5
        eps[episode_key(i)] = ep
    write_episodes(tmp_path / "eval.h5", eps)
    model, _ = load_model("tiny", device="cpu")
    model.eval()
    episodes = load_h5_episodes(str(tmp_path), ["memory_drawer"], 2, 1)
    tn = model.config.new_frames
    assert tn == 2 and [reopen_oracle.hiding_chunk(e, tn) for e in episodes] == [(3 - 1) // 2, (5 - 1) // 2]
    free_from = [reopen_oracle.last_hidden_frame(e) // tn for e in episodes]
    assert free_from == [3, 3]
    learned = []
    update = BatchedTempLoRA.update

    def spy(self, chunk, ids=None, *args, **kwargs):
        learned.append(list(ids))
        return update(self, chunk, ids, *args, **kwargs)

    monkeypatch.setattr(BatchedTempLoRA, "update", spy)
    kind, overrides = reopen_oracle.parse_setting("hide:3e-2,5,1,reverse")
    assert kind == "hide" and overrides["reverse"] and overrides["forward"]
    backward = reopen_oracle.parse_setting("3e-2,5,1,backward")[1]  # backwards alone
    assert backward["reverse"] and not backward["forward"]
    hidden = reopen_oracle.roll(model, episodes, free_from, kind, overrides, 4, 0)
    # the hiding chunks (1 of episode 0, 2 of episode 1), nothing else real; then the free chunk, as every setting does
    assert learned == [[0], [1], [0, 1]]
    still = reopen_oracle.roll(model, episodes, free_from, kind, {**overrides, "lr": 1e-12}, 4, 0)
    for k, a, b in zip(free_from, hidden, still):
        start = 1 + k * tn
        assert np.abs(a[start:].astype(int) - b[start:].astype(int)).mean() > 1.0, "the write did not reach the reopen"
    # around: the windows at every offset from the hiding chunk's context to the next chunk's end, short of the
    # reopen chunk's new frames (frames 5-6): episode 0 frames 1-6 (3 windows), episode 1 frames 3-6 (1)
    windows = [reopen_oracle.around_windows(e, reopen_oracle.hiding_chunk(e, tn), 3, 2, tn) for e in episodes]
    assert [len(w) for w in windows] == [3, 1] and np.array_equal(windows[1][0], episodes[1].frames[3:7])
    learned.clear()
    reopen_oracle.roll(model, episodes, free_from, "around", overrides, 4, 0)
    assert learned == [[0], [0], [0], [1], [0, 1]]
    with pytest.raises(ValueError, match="setting"):
        reopen_oracle.parse_setting("later:1e-3,2,1")
    # the phases rule: every real chunk and the windows one frame earlier, backwards, in one update per chunk
    kind, phased = reopen_oracle.parse_setting("3e-2,5,1,reverse,phases=1")
    assert kind == "every" and phased["reverse_phases"] == 1 and overrides["reverse_phases"] == 0
    plain = reopen_oracle.roll(model, episodes, free_from, kind, {**phased, "reverse_phases": 0}, 4, 0)
    learned.clear()
    with_phases = reopen_oracle.roll(model, episodes, free_from, kind, phased, 4, 0)
    assert learned == [[0, 1]] * 4  # real chunks 0-2 of both episodes, one update each, then the free chunk
    for k, a, b in zip(free_from, with_phases, plain):
        start = 1 + k * tn
        assert np.abs(a[start:].astype(int) - b[start:].astype(int)).mean() > 1.0, "the phases changed nothing"
    for bad in ("3e-2,5,1,phases=1", "3e-2,5,1,reverse,phases=x"):
        with pytest.raises(ValueError, match="setting"):
            reopen_oracle.parse_setting(bad)
    # change: the around windows of the chunks whose new frames change most (here the top one), not of the hiding
    far = lambda frame: np.where(frame > 127, 0, 255).astype(np.uint8)  # noqa: E731
    episodes[0].frames[5:7] = far(episodes[0].frames[4])  # chunk 2's new frames: episode 0's most change
    episodes[1].frames[3:5] = far(episodes[1].frames[2])  # chunk 1's: episode 1's
    assert [reopen_oracle.most_changed_chunks(e, 3, tn, 2) for e in episodes] == [[2, 1], [1, 2]]
    learned.clear()
    reopen_oracle.roll(model, episodes, free_from, *reopen_oracle.parse_setting("change:3e-2,5,1,reverse"), 4, 0, 1)
    assert learned == [[1], [1], [1], [0], [0, 1]]  # episode 1 around chunk 1 (3 windows), episode 0 around chunk 2
    # event: the around windows of the chunks the causal gate picks (`event_chunks`, given its gate)
    gates = []
    monkeypatch.setattr(reopen_oracle, "event_chunks",
                        lambda e, free, tn, gate: gates.append(gate) or ([2] if e is episodes[0] else [1]))
    learned.clear()
    reopen_oracle.roll(model, episodes, free_from, *reopen_oracle.parse_setting("event:3e-2,5,1,reverse"), 4, 0,
                       event_gate=2.5)
    assert learned == [[1], [1], [1], [0], [0, 1]] and gates == [2.5, 2.5]
    # replay: chunk 2's window (1) then chunk 1's again (3), where both are among the two of most change
    for replay, later in ((False, 1), (True, 4)):
        learned.clear()
        reopen_oracle.roll(model, episodes, free_from, *reopen_oracle.parse_setting("change:3e-2,5,1,reverse"), 4, 0,
                           2, replay=replay)
        assert learned == [[0, 1]] * 3 + [[0, 1]] * later + [[0, 1]]  # both episodes' windows side by side
    # written side by side, an episode's windows are its own: episode 0's video as when it is rolled alone (at 3e-3;
    # at 3e-2 the tiny model's fast steps amplify the batch's rounding into visible differences)
    setting = reopen_oracle.parse_setting("change:3e-3,5,1,reverse")
    both = reopen_oracle.roll(model, episodes, free_from, *setting, 4, 0, 2, replay=True)
    alone = reopen_oracle.roll(model, episodes[:1], free_from[:1], *setting, 4, 0, 2, replay=True)
    assert np.abs(both[0].astype(int) - alone[0].astype(int)).mean() < 0.05
    assert np.abs(both[1].astype(int) - alone[0].astype(int)).mean() > 1.0


def test_event_chunks_gate_on_the_chunks_before():
    """A chunk is an event when its pixel change exceeds the gate times the mean change of the chunks before it
    (from chunk 1, deciding from chunk 3 on), not of the whole episode (guards: the gate over all chunks, not strict,
    or deciding on chunk 2)."""
    from experiments import reopen_oracle

    tn = 2
    levels = [0, 10, 20, 50, 62, 102]  # chunk c's new frames at levels[c]: changes 10, 10, 30, 12, 40 (chunks 1-5)
    frames = np.zeros((1 + len(levels) * tn, 4, 4, 3), np.uint8)
    for c, v in enumerate(levels):
        frames[1 + c * tn: 1 + (c + 1) * tn] = v
    episode = type("Episode", (), {"frames": frames})()
    assert [reopen_oracle.chunk_change(episode, c, tn) for c in range(1, 6)] == [10, 10, 30, 12, 40]
    assert reopen_oracle.event_chunks(episode, 6, tn, 2.5) == [3, 5]  # 30 > 2.5 x 10, 40 > 2.5 x 15.5
    assert reopen_oracle.event_chunks(episode, 6, tn, 2.7) == [3]  # 40 < 2.7 x 15.5
    assert reopen_oracle.event_chunks(episode, 6, tn, 3.0) == []  # 30 is not above 3 x 10
    assert reopen_oracle.event_chunks(episode, 6, tn, 0.5) == [3, 4, 5]  # chunk 2 has one chunk before it
    assert reopen_oracle.event_chunks(episode, 5, tn, 2.5) == [3]  # chunk 5 is the reopen's


def test_memory_options_reach_every_setting_with_theta(tmp_path, monkeypatch):
    """--temp-lora-timesteps, --temp-lora-targets, --temp-lora-rank and --temp-lora-blocks override Θ's config in every
    setting with Θ, and Φ alone stays without a memory (guards: an option dropped, or applied to ``phi``); the gates'
    options and --replay reach the roll."""
    from experiments import reopen_oracle

    write_episodes(tmp_path / "eval.h5", {episode_key(i): _cube_episode(i) for i in range(2)})
    seen = {}

    def fake_roll(model, episodes, free_from, kind, overrides, max_batch, seed, *gate, ordinary=()):
        seen[kind if overrides is None else overrides["lr"]] = overrides
        seen["gates"], seen["ordinary"] = gate, [e.name for e in ordinary]
        return [e.frames.copy() for e in episodes]

    monkeypatch.setattr(reopen_oracle, "roll", fake_roll)
    reopen_oracle.main(["--data", str(tmp_path), "--model", "tiny", "--episodes", "2", "--threads", "1",
                        "--settings", "phi", "oracle:3e-2,5,1", "hide:1e-3,4,1,reverse", "--temp-lora-timesteps", "8",
                        "--temp-lora-targets", "to_q+conv1", "--temp-lora-rank", "4", "--temp-lora-blocks",
                        "down_blocks+up_blocks", "--changed-chunks", "2", "--event-gate", "1.4", "--replay",
                        "--out", str(tmp_path / "out")])
    assert seen["every"] is None and seen["gates"] == (2, 1.4, True)
    for lr in (3e-2, 1e-3):
        assert (seen[lr]["timesteps"], seen[lr]["target_modules"], seen[lr]["rank"], seen[lr]["blocks"]) == \
            (8, ("to_q", "conv1"), 4, ("down_blocks", "up_blocks"))
    assert seen[1e-3]["reverse"] and not seen[3e-2]["reverse"]
    with pytest.raises(SystemExit):
        reopen_oracle.main(["--data", str(tmp_path), "--temp-lora-timesteps", "0"])
    library = ["--data", str(tmp_path), "--model", "tiny", "--episodes", "2", "--threads", "1", "--settings", "phi",
               "1e-3,4,1,reverse", "--temp-lora-write", "events", "--event-gate", "1.2", "--temp-lora-replay",
               "--temp-lora-event-top", "2", "--temp-lora-event-slots", "2", "--temp-lora-slots-alone",
               "--temp-lora-event-change", "pixels", "--out", str(tmp_path / "out")]
    seen.clear()
    reopen_oracle.main(library)  # the library's rule: its write, gates and replay reach Θ's config, not Φ's
    assert seen["every"] is None and (seen[1e-3]["write"], seen[1e-3]["event_gate"], seen[1e-3]["event_top"],
                                      seen[1e-3]["replay"], seen[1e-3]["event_slots"], seen[1e-3]["slots_alone"],
                                      seen[1e-3]["event_change"]) == ("events", 1.2, 2, True, 2, True, "pixels")
    for bad in (["--settings", "around:1e-3,4,1", "--temp-lora-write", "events"], ["--temp-lora-replay"],
                ["--temp-lora-event-top", "2"], ["--temp-lora-event-slots", "2"],
                ["--temp-lora-write", "events", "--temp-lora-slots-alone"], ["--temp-lora-event-change", "pixels"]):
        with pytest.raises(SystemExit):  # a probe kind picks its own chunks; replay without the rule's writes
            reopen_oracle.main(["--data", str(tmp_path), *bad])
    (tmp_path / "other").mkdir()
    write_episodes(tmp_path / "other" / "eval.h5", {episode_key(i): _cube_episode(i + 5) for i in range(3)})
    seen.clear()
    reopen_oracle.main([*library, "--temp-lora-protect", "0.9", "--ordinary", f"{tmp_path / 'other'}:2"])
    assert seen[1e-3]["protect"] == 0.9 and seen["every"] is None and len(seen["ordinary"]) == 2
    for bad in (["--temp-lora-protect", "0.9"], ["--ordinary", f"{tmp_path / 'other'}:2"],
                ["--temp-lora-protect", "0.9", "--ordinary", f"{tmp_path}:2"],
                ["--temp-lora-protect", "0.9", "--ordinary", f"{tmp_path / 'other'}"]):
        with pytest.raises(SystemExit):  # protect and its ordinary episodes go together, and are not the tested ones
            reopen_oracle.main([*library, *bad])
    with pytest.raises(SystemExit, match="protect=1.0"):
        reopen_oracle.main([*library, "--temp-lora-protect", "1.0", "--ordinary", f"{tmp_path / 'other'}:2"])
    with pytest.raises(SystemExit, match="slots_alone"):  # the config's own check, on the model's config
        reopen_oracle.main(["--data", str(tmp_path), "--model", "tiny", "--settings", "1e-3,4,1", "--temp-lora-write",
                            "events", "--temp-lora-slots-alone", "--out", str(tmp_path / "out")])


def test_a_protected_setting_rolls_with_theta_off_the_ordinary_episodes_inputs(tmp_path, monkeypatch):
    """--temp-lora-protect with --ordinary, end to end on the tiny model: the memory gets bases from the ordinary
    episodes' chunks (not the tested ones) and keeps A orthogonal to them through every chunk's writes."""
    from experiments import reopen_oracle
    from worldmodel.memory import BatchedTempLoRA

    write_episodes(tmp_path / "eval.h5", {episode_key(i): _cube_episode(i) for i in range(2)})
    (tmp_path / "other").mkdir()
    write_episodes(tmp_path / "other" / "eval.h5", {episode_key(i): _cube_episode(i + 5) for i in range(2)})
    memories = []
    real_init = BatchedTempLoRA.__init__

    def keep(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        memories.append(self)

    monkeypatch.setattr(BatchedTempLoRA, "__init__", keep)
    report = reopen_oracle.main(["--data", str(tmp_path), "--model", "tiny", "--episodes", "2", "--threads", "1",
                                 "--settings", "3e-2,2,1,reverse", "--temp-lora-protect", "0.9",
                                 "--ordinary", f"{tmp_path / 'other'}:2", "--out", str(tmp_path / "out")])
    assert report["ordinary"].endswith("other:2") and len(report["results"]["3e-2,2,1,reverse"]["correct"]) == 2
    [memory] = memories
    assert memory.protected is not None and sum(u.shape[1] for u in memory.protected) > 0
    assert memory.adam_steps.sum() > 0, "the rule wrote nothing: the projection was never exercised"
    for lay, u in zip(memory.layout, memory.protected):
        a = memory.theta[:, lay.a_offset: lay.b_offset].view(memory.num_envs, lay.d_in, -1)
        assert float((u.t() @ a).abs().max()) <= 1e-5 * float(a.abs().max())

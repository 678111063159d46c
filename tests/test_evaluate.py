"""experiments.evaluate (Table 2): end to end on tiny random models and synthetic loop episodes (CPU)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from envs.episodes import episode_key, write_episodes
from envs.synthetic import loop_episode
from experiments import evaluate
from evaluation import memory_probe
from evaluation.episodes import stride_episode
from evaluation.report import LABELS, VARIANTS, fmt
from evaluation.scoring import copy_last_frame, summarize
from worldmodel import BatchedTempLoRA

# torch 2.13 deprecates TorchScript, but the public I3D/LPIPS weights ship as TorchScript files.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
FAST = ["--model", "tiny", "--steps", "2", "--quiet"]


@pytest.fixture(scope="module")
def no_chunk_model(tmp_path_factory):
    from worldmodel import SlowFastVGen

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("no_chunk") / "model"
    SlowFastVGen.from_preset("tiny", context_frames=1).save_pretrained(path)
    return path


def test_synthetic_end_to_end_all_variants(tmp_path, no_chunk_model):
    result = evaluate.main(["--synthetic", "--episodes", "2", "--synthetic-lap-chunks", "2",
                            "--no-chunk-model", str(no_chunk_model), "--out", str(tmp_path), *FAST])
    data = json.loads((tmp_path / "table2.json").read_text())
    assert list(data["variants"]) == list(VARIANTS) and data["num_episodes"] == 2
    for name, row in data["variants"].items():
        assert row["episodes"] == 2, name
        for key in ("scuts", "src", "psnr", "ssim"):
            assert math.isfinite(row["metrics"][key]["mean"]), (name, key)
        assert math.isfinite(row["generate_ms"])
        if name == "no_temp_lora":
            assert row["fast_update_ms"] is None and row["temp_lora"] is None
        else:
            assert row["fast_update_ms"] > 0
    assert data["variants"]["no_local_rule"]["temp_lora"]["variant"] == "full_sequence"
    assert data["variants"]["original"]["temp_lora"]["variant"] == "original"
    # the loop's second lap shows exactly the first lap's frames
    assert data["reference"]["src"]["mean"] == pytest.approx(100.0)
    assert result["variants"]["full"]["fvd"] is None  # no --i3d: a note, not a crash
    md = (tmp_path / "table2.md").read_text()
    for label in LABELS.values():
        assert f"| {label} |" in md
    assert "unavailable: pass --i3d PATH" in md and "unavailable: pass --lpips PATH" in md
    assert "python -m experiments.evaluate --synthetic" in md and "- machine: CPU" in md and "- date: " in md
    assert (tmp_path / "table2_grid.mp4").stat().st_size > 1000


class TinyI3D(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 6, 1)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3, 4))


class SquaredError(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((x - y) ** 2).mean(dim=(1, 2, 3))


def test_h5_tasks_batched_teacher_with_fvd_lpips(tmp_path):
    episodes = {}
    for i, task in enumerate(("memory_drawer", "play", "memory_cube_return")):
        ep = loop_episode(i, 2, frame_size=32, chunk_len=2)
        ep["attrs"]["task"] = task
        episodes[episode_key(i)] = ep
    write_episodes(tmp_path / "eval.h5", episodes)
    torch.jit.script(TinyI3D()).save(str(tmp_path / "i3d.pt"))
    torch.jit.script(SquaredError()).save(str(tmp_path / "lpips.pt"))
    out = tmp_path / "out"
    result = evaluate.main(["--data", str(tmp_path), "--episodes", "5", "--batch", "2", "--mode", "teacher",
                            "--variants", "no_temp_lora,full,no_chunk_input", "--i3d", str(tmp_path / "i3d.pt"),
                            "--lpips", str(tmp_path / "lpips.pt"), "--fvd-frames", "2", "--no-video",
                            "--out", str(out), *FAST])
    assert result["num_episodes"] == 2  # the play episode is filtered out
    assert {r["task"] for r in result["per_episode"]} == {"memory_drawer", "memory_cube_return"}
    assert any("only 2 episodes matched" in n for n in result["notes"])
    assert list(result["variants"]) == ["full", "no_temp_lora", "no_chunk_input"]
    assert "--no-chunk-model" in result["variants"]["no_chunk_input"]["skipped"]
    for name in ("full", "no_temp_lora"):
        row = result["variants"][name]
        assert math.isfinite(row["fvd"]) and row["fvd"] >= 0
        assert math.isfinite(row["metrics"]["lpips"]["mean"])
    md = (out / "table2.md").read_text()
    assert "skipped" in md and "unavailable" not in md and "rollout: teacher" in md
    assert not (out / "table2_grid.mp4").exists()


def test_stride_and_chunk_actions():
    ep = loop_episode(0, 2, frame_size=32, chunk_len=4)  # T = 1 + 4*4, chunk_len 4
    ep["actions"] = np.arange(16 * 5, dtype=np.float32).reshape(16, 5)
    strided = stride_episode(ep, 2, "x")
    assert len(strided.frames) == 9 and strided.chunk_len == 2
    np.testing.assert_array_equal(strided.frames[1], ep["frames"][2])
    np.testing.assert_allclose(strided.actions[0], ep["actions"][:2].mean(0))
    assert all(i < j for i, j in strided.revisits) and strided.revisits.max() < 9
    full = stride_episode(ep, 1, "y")  # model chunks of 2 frames over episode chunks of 4
    assert full.num_model_chunks(2) == 8 and full.num_model_chunks(3) == 6
    text, vec = full.chunk_action(1, 2)
    assert text == full.language[0]
    np.testing.assert_array_equal(vec, ep["actions"][2:4])
    _, last = full.chunk_action(5, 3)  # past the end: the last action repeats
    np.testing.assert_array_equal(last, ep["actions"][[15, 15, 15]])
    with pytest.raises(ValueError, match="not divisible"):
        stride_episode(ep, 3, "z")


def test_unknown_variant_and_help(capsys):
    with pytest.raises(SystemExit) as err:
        evaluate.main(["--synthetic", "--variants", "full,bogus"])
    assert err.value.code == 2
    msg = capsys.readouterr().err
    assert "unknown variant(s) ['bogus']" in msg and "no_local_rule" in msg
    with pytest.raises(SystemExit) as err:
        evaluate.main(["--help"])
    assert err.value.code == 0 and "--no-chunk-model" in capsys.readouterr().out


def test_fast_update_overrides_reach_the_variants_memory(capsys):
    """--temp-lora-* flags (the recall sweep's knobs) override the model's Temp-LoRA config for every Temp-LoRA
    variant, keep each variant's learning rule, and reject values the config cannot take."""
    from types import SimpleNamespace

    from evaluation.rollout import variant_config
    from worldmodel.config import TempLoRAConfig

    args = evaluate.parse_args(["--synthetic", "--temp-lora-lr", "2e-3", "--temp-lora-draws", "4",
                                "--temp-lora-rehearsal", "2", "--temp-lora-reverse"])
    assert args.temp_lora == {"lr": 2e-3, "draws": 4, "rehearsal": 2, "reverse": True}
    model = SimpleNamespace(config=SimpleNamespace(temp_lora=TempLoRAConfig()))
    full = variant_config("full", model, args.temp_lora)
    no_local = variant_config("no_local_rule", model, args.temp_lora)
    assert (full.lr, full.draws, full.rehearsal, full.variant, full.reverse) == (2e-3, 4, 2, "local", True)
    assert (no_local.draws, no_local.rehearsal, no_local.variant) == (4, 2, "full_sequence")
    assert variant_config("no_temp_lora", model, args.temp_lora) is None
    assert evaluate.parse_args(["--synthetic"]).temp_lora == {}  # the model's own settings
    reuse = evaluate.parse_args(["--synthetic", "--temp-lora-reuse-pass"]).temp_lora
    assert variant_config("full", model, reuse).reuse_sampler_pass
    with pytest.raises(ValueError, match="reuse_sampler_pass"):  # the sampler's one pass: no full_sequence windows
        variant_config("no_local_rule", model, reuse)
    phases = evaluate.parse_args(["--synthetic", "--temp-lora-reverse", "--temp-lora-reverse-phases", "3"]).temp_lora
    assert variant_config("full", model, phases).reverse_phases == 3
    with pytest.raises(ValueError, match="reverse_phases"):  # windows around the chunk: the local rule's alone
        variant_config("no_local_rule", model, phases)
    cheap = evaluate.parse_args(["--synthetic", "--temp-lora-update-every", "4", "--temp-lora-blocks",
                                 "up_blocks.2+up_blocks.3"]).temp_lora
    assert (variant_config("full", model, cheap).update_every, variant_config("full", model, cheap).blocks) == \
        (4, ("up_blocks.2", "up_blocks.3"))
    layout = evaluate.parse_args(["--synthetic", "--temp-lora-targets", "to_q+conv1", "--temp-lora-rank", "8"]).temp_lora
    assert (variant_config("full", model, layout).target_modules, variant_config("full", model, layout).rank) == \
        (("to_q", "conv1"), 8)
    for given, timesteps in (("8", 8), ("uniform", "uniform")):
        chosen = evaluate.parse_args(["--synthetic", "--temp-lora-timesteps", given]).temp_lora
        assert variant_config("full", model, chosen).timesteps == timesteps
    events = evaluate.parse_args(["--synthetic", "--variants", "full,no_temp_lora", "--temp-lora-write", "events",
                                  "--temp-lora-event-gate", "1.5", "--temp-lora-replay", "--temp-lora-event-top",
                                  "2", "--temp-lora-event-slots", "2", "--temp-lora-slots-alone",
                                  "--temp-lora-event-change", "pixels"]).temp_lora
    chosen = variant_config("full", model, events)
    assert (chosen.write, chosen.event_gate, chosen.event_top, chosen.replay, chosen.event_slots, chosen.slots_alone,
            chosen.event_change) == ("events", 1.5, 2, True, 2, True, "pixels")
    named = evaluate.parse_args(["--synthetic", "--variants", "full", "--temp-lora-rule", "recall",
                                 "--temp-lora-steps", "2"]).temp_lora  # the rule, a flag over it
    assert variant_config("full", model, named) == dataclasses.replace(
        model.config.temp_lora.with_rule("recall"), steps=2)
    for flag, bad in (("--temp-lora-draws", "0"), ("--temp-lora-rehearsal", "-1"), ("--temp-lora-timesteps", "0"),
                      ("--temp-lora-reverse-phases", "-1"), ("--temp-lora-update-every", "0"),
                      ("--temp-lora-blocks", "+"), ("--temp-lora-targets", "+"), ("--temp-lora-rank", "0"),
                      ("--temp-lora-event-gate", "0"), ("--temp-lora-event-top", "-1"), ("--temp-lora-write", "events"),
                      ("--temp-lora-event-slots", "-1"), ("--temp-lora-rule", "recal"), ("--temp-lora-rule", "recall"),
                      ("--temp-lora-replay", None)):
        with pytest.raises(SystemExit) as err:  # events with the default variants: two of them use other rules
            evaluate.parse_args(["--synthetic", flag] + ([bad] if bad else []))
        assert err.value.code == 2 and flag in capsys.readouterr().err


def test_each_temp_lora_flag_sets_its_own_config_field():
    """Each --temp-lora-* flag (`evaluation.temp_lora_flags`, one table for evaluate and reopen_oracle) sets the
    TempLoRAConfig field it names, alone, and every field evaluate records has a flag (guards: a flag read into
    another field, a new field the CLIs cannot set)."""
    from evaluation.temp_lora_flags import FLAG, TEMP_LORA_FLAGS
    from worldmodel.config import TempLoRAConfig

    renamed = {"reuse_sampler_pass": "reuse-pass", "target_modules": "targets"}  # the flags named otherwise

    assert set(TEMP_LORA_FLAGS) <= {f.name for f in dataclasses.fields(TempLoRAConfig)}
    assert set(evaluate.RECORDED_TEMP_LORA) <= set(evaluate.TEMP_LORA_FIELDS)
    assert set(TEMP_LORA_FLAGS) - set(evaluate.TEMP_LORA_FIELDS) == {"protect"}  # reopen_oracle's, with --ordinary
    for field in evaluate.TEMP_LORA_FIELDS:
        kind = TEMP_LORA_FLAGS[field][1]
        text, value = {FLAG: (None, True), int: ("3", 3), float: ("0.5", 0.5)}.get(kind, (None, None))
        if isinstance(kind, tuple):
            text, value = kind[-1], kind[-1]
        elif value is None:  # the parsers of t and of names
            text, value = ("8", 8) if field == "timesteps" else ("a+b", ("a", "b"))
        events = ["--temp-lora-write", "events"] if field == "replay" else []  # replay needs the event rule
        flag = "--temp-lora-" + renamed.get(field, field.replace("_", "-"))
        args = evaluate.parse_args(["--synthetic", "--variants", "full", *events, flag]
                                   + ([text] if text is not None else []))
        assert args.temp_lora == {field: value, **({"write": "events"} if events else {})}, field


def test_no_chunk_model_must_have_one_context_frame(tmp_path):
    with pytest.raises(SystemExit, match="context_frames=1"):
        evaluate.main(["--synthetic", "--episodes", "1", "--variants", "no_chunk_input", "--no-chunk-model", "tiny",
                       "--out", str(tmp_path), *FAST])


def test_generate_without_metrics_then_score_saved_videos(tmp_path, monkeypatch):
    """Where scenedetect/scikit-image are missing (the GPU machine), videos are saved for scoring elsewhere."""
    gen_out, score_out = tmp_path / "gen", tmp_path / "score"
    with monkeypatch.context() as m:
        m.setitem(__import__("sys").modules, "evaluation.metrics", None)  # import fails as if not installed
        saved = evaluate.main(["--synthetic", "--episodes", "2", "--synthetic-lap-chunks", "2",
                               "--variants", "full,no_temp_lora", "--out", str(gen_out), *FAST])
    assert "metrics_error" in saved and not (gen_out / "table2.md").exists()
    assert sorted(p.name for p in (gen_out / "videos").iterdir()) == [
        "episode_00000.npz", "episode_00001.npz", "rollout.json"]
    result = evaluate.main(["--from-videos", str(gen_out / "videos"), "--out", str(score_out), "--quiet"])
    assert result["num_episodes"] == 2 and list(result["variants"]) == ["full", "no_temp_lora"]
    assert result["variants"]["full"]["fast_update_ms"] > 0
    assert math.isfinite(result["variants"]["full"]["metrics"]["src"]["mean"])
    md = (score_out / "table2.md").read_text()
    assert "videos generated by `python -m experiments.evaluate --synthetic" in md
    assert (score_out / "table2_grid.mp4").is_file()


def test_copy_baseline_and_infinite_psnr_summary():
    frames = np.arange(9)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)  # frame t is filled with t
    teacher = copy_last_frame(frames, new_frames=4, forced_chunks=2)
    assert teacher[:, 0, 0, 0].tolist() == [0, 0, 0, 0, 0, 4, 4, 4, 4]  # chunk c repeats frame 4c
    assert (copy_last_frame(frames, new_frames=4, forced_chunks=0) == frames[0]).all()  # free
    recall = copy_last_frame(np.arange(13)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8), 4, 1)
    assert recall[:, 0, 0, 0].tolist() == [0] * 5 + [4] * 8  # the first chunk forced, then its last real frame
    stat = summarize([20.0, 22.0, math.inf, math.nan])
    assert (stat["mean"], stat["n"], stat["n_inf"]) == (21.0, 3, 1)
    assert fmt(stat) == "21.00 ± 1.00 (+1 inf)"


def _cube_episode(seed: int) -> dict:
    """A loop episode with the scene benchmark's records: a red cube hidden in the drawer for the middle
    frames and reappearing at a known pixel for the last chunk (drawn into the real frames)."""
    ep = loop_episode(seed, 2, frame_size=32, chunk_len=2)
    T = len(ep["frames"])
    ep["attrs"].update(task="memory_drawer", cube_color="red")
    sim_state = np.zeros((T, 8), np.float32)
    sim_state[:, 7] = 1.0  # cube_in_drawer
    cube_pixel = np.zeros((T, 6), np.float32)
    cube_pixel[:, :2] = cube_pixel[:, 4:6] = (10.0, 12.0)  # x, y and the visible part's centre
    cube_pixel[:, 2] = 2.0  # half size
    cube_pixel[-2:, 3] = 1.0  # visible only in the last chunk: the reopen
    ep["frames"][-2:, 10:14, 8:12] = (230, 20, 20)
    ep.update(sim_state=sim_state, cube_pixel=cube_pixel)
    return ep


def test_cube_recall_scores_the_reopen(tmp_path):
    """The real video shows the cube where and how it reappears (recall 1); a model that has not seen it
    (random tiny model) does not: the probe is wired into the table."""
    write_episodes(tmp_path / "eval.h5", {episode_key(i): _cube_episode(i) for i in range(2)})
    out = tmp_path / "out"
    result = evaluate.main(["--data", str(tmp_path), "--episodes", "2", "--variants", "no_temp_lora", "--no-video",
                            "--out", str(out), *FAST])
    assert result["reference"]["cube_recall"]["mean"] == 1.0 and result["reference"]["cube_recall"]["n"] == 2
    stat = result["variants"]["no_temp_lora"]["metrics"]["cube_recall"]
    assert stat["n"] == 2 and stat["mean"] == 0.0
    # what each reopen showed is kept beside the score: the colour that won the probe's vote, or "none"
    records = [r for r in result["per_episode"] if r["variant"] == "no_temp_lora"]
    assert [r["cube_color"] for r in records] == ["red", "red"]
    assert all(r["cube_seen"] in (*memory_probe.COLOR_NAMES, memory_probe.NO_CUBE) for r in records)
    seen = result["variants"]["no_temp_lora"]["cube_seen"]
    assert sum(seen.values()) == 2 and seen == dict(Counter(r["cube_seen"] for r in records))
    assert f"| 2 | {next(iter(seen))} " in (out / "table2.md").read_text()
    assert "cube recall at the drawer reopen" in (out / "table2.md").read_text()
    for stat in (result["variants"]["no_temp_lora"]["metrics"], result["copy_last_frame"]):
        assert math.isfinite(stat["psnr_dynamic"]["mean"]) and math.isfinite(stat["ssim_dynamic"]["mean"])
    assert 0 < result["reference"]["dynamic_fraction"]["mean"] <= 100
    assert "dynamic PSNR" in (out / "table2.md").read_text()


def test_frame_sheet(tmp_path):
    write_episodes(tmp_path / "eval.h5", {episode_key(i): _cube_episode(i) for i in range(1)})
    out = tmp_path / "out"
    result = evaluate.main(["--data", str(tmp_path), "--episodes", "1", "--variants", "full,no_temp_lora", "--no-video",
                            "--sheet", "--out", str(out), *FAST])
    from PIL import Image

    sheet = np.asarray(Image.open(out / result["sheet"]))
    assert sheet.shape[0] > 3 * 4 * 32 and sheet.shape[1] > 8 * 4 * 32 * 0.5  # 3 rows (real + 2), up to 8 columns
    assert "Frame sheet: `table2_sheet.png`" in (out / "table2.md").read_text()


def test_dynamic_region_scores_what_moves():
    """A square moves over a static background: copying the start frame gets the background exactly and the
    square wrong, so its whole-frame PSNR is high while its dynamic-region PSNR is the square's error alone."""
    from evaluation.episodes import EvalEpisode
    from evaluation.scoring import Scorer

    frames = np.full((5, 16, 16, 3), 50, np.uint8)
    for t in range(1, 5):
        frames[t, 4:8, 2 * t: 2 * t + 4] = 200  # 16 of 256 pixels move
    ep = EvalEpisode("moving", "memory_drawer", frames, np.zeros((4, 5), np.float32), ["x"], 2,
                     np.zeros((0, 2), np.int64))
    scorer = Scorer(16, None, None, None, torch.device("cpu"), [])
    copy = scorer.fidelity(copy_last_frame(frames, 2, 0), ep)
    assert copy["psnr_dynamic"] == pytest.approx(10 * np.log10(255**2 / 150**2))  # 4.6 dB: the square only
    assert copy["psnr"] > copy["psnr_dynamic"] + 10  # the static background lifts the whole frame
    exact = scorer.fidelity(frames, ep)
    assert exact["psnr_dynamic"] == math.inf and exact["ssim_dynamic"] == pytest.approx(100.0)


def test_recall_mode_is_teacher_forced_up_to_the_last_first_visit(micro_model):
    """The memory benchmark's rollout: chunks up to the one holding the last first visit of an
    out-of-context revisit pair are generated exactly as in teacher mode, the later ones free."""
    from evaluation.episodes import EvalEpisode, teacher_chunks
    from evaluation.rollout import rollout

    model = micro_model(temp_lora=dict(rank=2, alpha=4.0, lr=1e-2))
    cfg = model.config
    n = cfg.new_frames
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (1 + 4 * n, cfg.frame_size, cfg.frame_size, 3), dtype=np.uint8)
    revisits = np.array([[n, 3 * n + 1], [3 * n, 3 * n + 1]])  # frame n: out of the 4th chunk's context
    ep = EvalEpisode("e", "memory_drawer", frames, np.zeros((4 * n, 5), np.float32), ["open the drawer"], n,
                     revisits)
    assert teacher_chunks(ep, "recall", cfg.context_frames, n) == 1  # frame n is chunk 0's last
    assert teacher_chunks(ep, "teacher", cfg.context_frames, n) == 4 and teacher_chunks(ep, "free", 2, n) == 0
    memory = BatchedTempLoRA(model, 1)
    videos = {m: rollout(model, memory, [ep], m, 1, [0]).videos[0] for m in ("teacher", "recall", "free")}
    assert np.array_equal(videos["recall"][: 1 + n], videos["teacher"][: 1 + n])  # chunk 0: teacher-forced
    assert not np.array_equal(videos["recall"][1 + n:], videos["teacher"][1 + n:])  # then free
    assert np.array_equal(videos["recall"][: 1 + n], videos["free"][: 1 + n])  # chunk 0 is made before it learns
    assert not np.array_equal(videos["recall"][1 + n:], videos["free"][1 + n:])  # ... from the real chunk



def test_a_reused_sampler_pass_runs_at_batch_one(tmp_path):
    """--temp-lora-reuse-pass at --batch 1 rolls out with the batched memory (the peft one cannot reuse a pass), and
    the report says which fast step ran."""
    write_episodes(tmp_path / "eval.h5", {episode_key(i): _cube_episode(i) for i in range(1)})
    out = tmp_path / "out"
    result = evaluate.main(["--data", str(tmp_path), "--episodes", "1", "--variants", "full", "--no-video",
                            "--temp-lora-reuse-pass", "--out", str(out), *FAST])
    assert result["settings"]["temp_lora_reuse_sampler_pass"] is True
    assert "scored on the first sampler pass" in (out / "table2.md").read_text()

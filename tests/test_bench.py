"""experiments.bench (Table 1): both rows, overheads and clear errors, on the tiny preset (CPU)."""

from __future__ import annotations

import json
import math
import mmap
import time
from pathlib import Path

import pytest
import torch

from experiments import bench
from worldmodel import SlowFastVGen


def test_bench_tiny_rows_and_overhead(tmp_path):
    result = bench.main(["--preset", "tiny", "--device", "cpu", "--chunks", "2", "--steps", "2", "--repeats", "2",
                         "--out", str(tmp_path)])
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["overhead"] == result["overhead"]
    rows = {(r["sample"], r["temp_lora"]): r for r in data["rows"]}
    assert set(rows) == {(s, t) for s in ("chunk", "video (2 chunks)") for t in (False, True)}
    for row in rows.values():
        assert row["s_mean"] > 0 and len(row["runs_s"]) == 2 and row["peak_mib"] > 0
    # the Temp-LoRA row holds the factors, their snapshot and Adam state on top of the same model
    assert rows[("chunk", True)]["peak_mib"] > rows[("chunk", False)]["peak_mib"]
    for over in data["overhead"].values():
        assert math.isfinite(over["time_pct"]) and math.isfinite(over["memory_pct"])
    assert data["fast_update_ms"] > 0 and data["dtype"] == "float32" and "modelscope_chunk" not in data
    md = (tmp_path / "bench.md").read_text()
    assert "| chunk | without |" in md and "| chunk | with |" in md and "time overhead" in md
    assert "python -m experiments.bench --preset tiny" in md and "- machine: CPU" in md and "- date: " in md


def test_unknown_preset_or_model_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        bench.main(["--preset", "huge"])
    assert err.value.code == 2 and "unknown preset 'huge'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown preset or model"):
        bench.main(["--model", str(tmp_path / "missing"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as err:
        bench.main(["--help"])
    assert err.value.code == 0 and "--preset" in capsys.readouterr().out


def test_cpu_peak_memory_sees_a_transient_allocation():
    # fresh pages (an anonymous mapping), not the heap: a worker whose earlier tests freed large tensors keeps that
    # memory, and a tensor taken from it raises no RSS (a CI run saw a 4 KiB delta)
    pages = mmap.mmap(-1, 128 * 2**20)
    with bench.PeakMemory(torch.device("cpu")) as peak:
        x = torch.frombuffer(pages, dtype=torch.uint8)  # 128 MiB, touched
        x.fill_(1)
        # the sampler runs every 2 ms when it is scheduled: on a loaded 2-core machine (xdist) 20 ms could pass
        # without it running once, so the allocation is held until it has been seen (or 2 s have passed)
        deadline = time.monotonic() + 2.0
        while "psutil" in peak.method and peak._peak - peak._start <= 64 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.01)
        del x
        pages.close()
    if "psutil" in peak.method:
        assert peak.delta > 64 * 2**20
    else:  # getrusage: a lower bound
        assert peak.delta >= 0


def test_bench_env_times_the_real_scene_side_by_side(tmp_path):
    """bench_env puts the learned env beside the real scene in one run: the real row runs --real-workers
    scenes at once, and each imagined row is given as a multiple of it."""
    from experiments import bench_env

    out = tmp_path / "bench_env.json"
    result = bench_env.main(["--preset", "tiny", "--device", "cpu", "--sizes", "2", "--chunks", "1", "--threads", "1",
                             "--temp-lora", "off", "--no-single", "--real", "on", "--real-workers", "2",
                             "--real-steps", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert rows == result["rows"]
    [real] = [r for r in rows if r["env"].startswith("real")]
    [vector] = [r for r in rows if r["env"] == "vector"]
    assert real["num_envs"] == 2 and real["frames_per_s"] > 0 and real["frame_size"] == vector["frame_size"]
    assert vector["x_real"] == pytest.approx(vector["frames_per_s"] / real["frames_per_s"])
    assert "| real (OGBench scene) | 2 |" in result["table"]


def test_bench_env_puts_theta_in_the_blocks_layers_and_rank_asked(tmp_path, monkeypatch):
    """--temp-lora-blocks, --temp-lora-targets and --temp-lora-rank reach the envs' memory (TempLoRAConfig's blocks,
    target_modules, rank) and the rows record them with Θ's values per env; several targets or ranks give a row
    each, the model's where "default"."""
    from experiments import bench_env

    seen = []
    real_init = bench_env.WorldModelVectorEnv.__init__

    def spy(self, *args, **kwargs):
        seen.append((kwargs["temp_lora"].blocks, kwargs["temp_lora"].target_modules, kwargs["temp_lora"].rank))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(bench_env.WorldModelVectorEnv, "__init__", spy)
    result = bench_env.main(["--preset", "tiny", "--device", "cpu", "--sizes", "2", "--chunks", "1", "--threads", "1",
                             "--temp-lora", "on", "--temp-lora-blocks", "up_blocks.1", "--no-single", "--real", "off",
                             "--temp-lora-targets", "default,to_q+to_k", "--temp-lora-rank", "4,2",
                             "--out", str(tmp_path / "b.json")])
    default = SlowFastVGen.from_preset("tiny").config.temp_lora.target_modules
    assert seen == [(("up_blocks.1",), targets, rank) for targets in (default, ("to_q", "to_k")) for rank in (4, 2)]
    rows = result["rows"]
    assert [(r["temp_lora_blocks"], r["temp_lora_targets"], r["temp_lora_rank"]) for r in rows] == [
        ("up_blocks.1", targets, rank) for targets in (None, "to_q+to_k") for rank in (4, 2)]
    values = [r["theta_values_per_env"] for r in rows]
    assert values[0] == 2 * values[1] and values[2] == 2 * values[3] and values[2] < values[0]
    assert "Θ on to_q+to_k, rank 2" in result["table"]


def test_bench_env_rows_per_fast_batch(tmp_path, monkeypatch):
    """--fast-batch 1,2 gives a Temp-LoRA row per fast batch, each env built with it and recorded in its row (the
    row without Temp-LoRA once, each on row's overhead against it); a bad list is a clear error;
    --fast-recompute on,off: a row with the fast backward recomputing its blocks, one without."""
    from experiments import bench_env

    seen, recomputed = [], []
    real_init = bench_env.WorldModelVectorEnv.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        memory = self.batch.imagination.memory
        seen.append((kwargs.get("fast_batch_size"), getattr(memory, "max_batch", None)))
        recomputed.append(getattr(memory, "recompute", None))

    monkeypatch.setattr(bench_env.WorldModelVectorEnv, "__init__", spy)
    result = bench_env.main(["--preset", "tiny", "--device", "cpu", "--sizes", "2", "--chunks", "1", "--threads", "1",
                             "--temp-lora", "on,off", "--fast-batch", "1,2", "--no-single", "--real", "off",
                             "--out", str(tmp_path / "b.json")])
    assert seen == [(1, 1), (2, 2), (None, None)]
    rows = result["rows"]
    assert [(r["temp_lora"], r["fast_batch"]) for r in rows] == [("on", 1), ("on", 2), ("off", None)]
    assert all("temp_lora_time_overhead" in r for r in rows[:2])
    assert "on, fast batch 1, rank" in result["table"] and "on, fast batch 2, rank" in result["table"]
    for bad in ("0", "a", ","):
        with pytest.raises(SystemExit, match="--fast-batch must be positive integers"):
            bench_env.main(["--preset", "tiny", "--fast-batch", bad, "--out", str(tmp_path / "c.json")])
    # --fast-recompute on,off: a Temp-LoRA row with the fast backward recomputing its blocks, one without
    recomputed.clear()
    result = bench_env.main(["--preset", "tiny", "--device", "cpu", "--sizes", "2", "--chunks", "1", "--threads", "1",
                             "--temp-lora", "on", "--fast-recompute", "on,off", "--no-single", "--real", "off",
                             "--out", str(tmp_path / "d.json")])
    assert recomputed == [True, False] and [r["fast_recompute"] for r in result["rows"]] == [True, False]
    assert "on, fast batch 128, recomputed, rank" in result["table"]
    with pytest.raises(SystemExit, match="--fast-recompute must be on, off or on,off"):
        bench_env.main(["--preset", "tiny", "--fast-recompute", "yes", "--out", str(tmp_path / "e.json")])


def test_bench_env_refuses_a_reused_pass_at_one_pass(tmp_path):
    """--reuse-pass at one denoising pass would time a step that is not the reused pass (the env takes the usual step
    there: a generated chunk scores exactly 0 on the sampler's one pass): a clear error, at two passes it runs."""
    from experiments import bench_env

    args = ["--preset", "tiny", "--device", "cpu", "--sizes", "1", "--chunks", "1", "--threads", "1", "--temp-lora",
            "on", "--reuse-pass", "--no-single", "--real", "off"]
    with pytest.raises(ValueError, match="--reuse-pass at one denoising pass"):
        bench_env.main([*args, "--denoise-steps", "1", "--out", str(tmp_path / "a.json")])
    result = bench_env.main([*args, "--denoise-steps", "2", "--out", str(tmp_path / "b.json")])
    assert [r["reuse_sampler_pass"] for r in result["rows"]] == [True]


def test_bench_env_profile_names_the_fast_updates_parts(tmp_path):
    """--profile writes each vector row's op totals, the fast update's labelled parts among them where Θ learns; rows
    with Temp-LoRA off warm up as many steps as those with it on (one step let a late one-off into the timed chunks)."""
    from experiments import bench_env

    result = bench_env.main(["--preset", "tiny", "--device", "cpu", "--sizes", "2", "--chunks", "2", "--threads", "1",
                             "--temp-lora", "on,off", "--no-single", "--real", "off", "--profile", str(tmp_path / "p"),
                             "--update-every", "2", "--out", str(tmp_path / "a.json")])
    assert [r["warmup_steps"] for r in result["rows"]] == [2, 2]
    on, off = (Path(r["profile"]).read_text() for r in result["rows"])
    assert "by cpu_time_total" in on and "aten::" in on
    for part in ("rows", "forward", "rollback_check", "backward", "adam", "settle"):
        assert f"temp_lora.{part} " in on
    assert "temp_lora.forward" not in off and "aten::" in off


def test_bench_env_times_whole_periods_of_thetas_steps(tmp_path):
    """With Temp-LoRA on, --chunks must be a multiple of --update-every: after K warm-up steps, 32 timed chunks at
    K = 24 hold one of Θ's steps per env, the rate of K = 32 (session 56's H200 rows); the error names the chunks to
    time."""
    from experiments import bench_env

    args = ["--preset", "tiny", "--device", "cpu", "--sizes", "2", "--threads", "1", "--no-single", "--real", "off",
            "--update-every", "2", "--out", str(tmp_path / "a.json")]
    with pytest.raises(SystemExit, match="--chunks 3 is not a multiple of --update-every 2.*time --chunks 4"):
        bench_env.main([*args, "--chunks", "3", "--temp-lora", "on,off"])
    result = bench_env.main([*args, "--chunks", "3", "--temp-lora", "off"])  # Θ off: any count
    assert [r["temp_lora"] for r in result["rows"]] == ["off"]

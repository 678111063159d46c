"""experiments.vae_check: the VAE's reconstruction error over whole frames and at the recorded cube."""

import json

import numpy as np
import pytest

from envs.episodes import write_episodes
from envs.synthetic import random_episodes
from experiments.vae_check import check, main, reconstruct


def test_cube_error_is_the_error_at_the_recorded_cube_pixels(tmp_path, micro_model):
    model = micro_model()
    episodes = random_episodes(2, 2, seed=0, frame_size=16, chunk_len=2)
    frames = episodes[0]["frames"]
    # columns CUBE_PIXEL_FIELDS: x, y, half_size, visible fraction, visible part's x, y
    cube = np.tile(np.float32([8.0, 5.0, 1.5, 1.0, 8.0, 5.0]), (len(frames), 1))
    cube[0, 3] = 0.2  # mostly hidden: not scored
    cube[1, :2] = (0.0, 5.0)  # its 3x3 would leave the image: not scored
    episodes[0]["cube_pixel"] = cube
    write_episodes(tmp_path / "data.h5", {f"episode_{i}": ep for i, ep in enumerate(episodes)})

    result = check(model, str(tmp_path / "data.h5"))
    error = np.abs(reconstruct(model, frames).astype(np.float32) - frames)
    assert result["episodes"] == 2 and result["cube_frames"] == len(frames) - 2
    assert result["cube_mae"] == pytest.approx(float(error[2:, 4:7, 7:10].mean()), rel=1e-5)  # rows v-1..v+1
    second = episodes[1]["frames"]
    whole = [error.mean(), np.abs(reconstruct(model, second).astype(np.float32) - second).mean()]
    assert result["frame_mae"] == pytest.approx(float(np.mean(whole)), rel=1e-5)

    def round_trip_psnr(video: np.ndarray) -> tuple[float, float]:  # whole frames; the dynamic region
        err = ((reconstruct(model, video).astype(np.float64) - video) ** 2).mean(-1)  # (T, H, W)
        moving = (np.abs(video.astype(np.int16) - video[0]) > 24).any(-1)  # differs from the start frame
        whole = np.mean(10 * np.log10(255.0**2 / err.mean(axis=(1, 2))))
        dynamic = np.mean([10 * np.log10(255.0**2 / e[m].mean()) for e, m in zip(err, moving) if m.any()])
        return whole, dynamic

    expected = np.mean([round_trip_psnr(frames), round_trip_psnr(second)], axis=0)
    assert (result["psnr"], result["dynamic_psnr"]) == pytest.approx(tuple(expected), rel=1e-6)
    assert result["dynamic_psnr"] != pytest.approx(result["psnr"], abs=0.01)

    out = main(["--model", "tiny", "--data", str(tmp_path / "data.h5"), "--out", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == out and out["cube_frames"] == len(frames) - 2


def test_colour_readings_score_the_reconstruction_as_the_memory_benchmark_does(tmp_path, micro_model):
    """A reconstruction that is the real video reads the cube's colour in every visible frame and recalls the
    reopen; the same video with the cube painted out reads none; `check` reports a tiny random model's round trip,
    which loses the cube (guards: the readings taken on the real frames instead of the reconstruction)."""
    from experiments.vae_check import colour_readings
    from test_evaluate import _cube_episode  # tests/ is on sys.path (pytest's default import mode)

    ep = _cube_episode(0)
    read, recall = colour_readings(ep["frames"], ep)
    assert read == [True, True] and recall["correct"] and recall["frame_accuracy"] == 1.0
    painted = ep["frames"].copy()
    painted[-2:, 6:18, 4:16] = (60, 60, 60)  # the probe's whole disc grey: no chroma
    read, recall = colour_readings(painted, ep)
    assert read == [False, False] and not recall["correct"] and recall["label"] == "none"

    write_episodes(tmp_path / "data.h5", {"episode_0": ep})
    result = check(micro_model(), str(tmp_path / "data.h5"))
    assert result["color_frames"] == 2 and result["reopen_episodes"] == 1
    assert result["cube_color_accuracy"] == 0.0 and result["reopen_recall"] == 0.0

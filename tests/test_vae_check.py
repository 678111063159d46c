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
    cube = np.tile(np.float32([8.0, 5.0, 1.0]), (len(frames), 1))  # (u, v, visible fraction)
    cube[0, 2] = 0.2  # mostly hidden: not scored
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

    out = main(["--model", "tiny", "--data", str(tmp_path / "data.h5"), "--out", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == out and out["cube_frames"] == len(frames) - 2

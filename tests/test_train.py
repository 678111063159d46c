"""Trainer: exact kill-and-resume, atomic checkpoints, NaN handling, the slow-fast and VAE phases."""

from __future__ import annotations

import pytest
import torch

from envs.data import EpisodeDataset
from worldmodel.model import SlowFastVGen
from worldmodel.train import Trainer, TrainConfig


def _model() -> SlowFastVGen:
    torch.manual_seed(0)
    return SlowFastVGen.from_preset("tiny")


def _cfg(out, steps, **kw) -> TrainConfig:
    return TrainConfig(phase="slow", steps=steps, batch_size=4, lr=1e-3, log_every=1, checkpoint_every=3,
                       out_dir=str(out), **kw)


def test_killed_run_resumes_on_the_same_loss_curve(tmp_path, chunk_dataset, kill_at_step):
    reference = Trainer(_model(), chunk_dataset, _cfg(tmp_path / "a", 6)).fit(progress=False)

    killed = Trainer(_model(), chunk_dataset, _cfg(tmp_path / "b", 6))
    kill_at_step(killed, "_phase_loss", 4)
    with pytest.raises(KeyboardInterrupt):
        killed.fit(progress=False)
    assert killed.step == 4  # steps 1-4 ran, the checkpoint holds step 3

    resumed = Trainer(_model(), chunk_dataset, _cfg(tmp_path / "b", 6))
    history = resumed.fit(progress=False)
    assert resumed.step == 6
    assert [r["step"] for r in history] == [1, 2, 3, 4, 5, 6]
    torch.testing.assert_close([r["loss"] for r in history], [r["loss"] for r in reference], rtol=1e-4, atol=1e-6)
    assert not list((tmp_path / "b").glob(".last.ckpt.*")), "no temp files left behind"


def test_nan_loss_raises_and_keeps_the_last_checkpoint(tmp_path, chunk_dataset, monkeypatch):
    trainer = Trainer(_model(), chunk_dataset, _cfg(tmp_path, 3))
    trainer.fit(progress=False)
    saved = (tmp_path / "last.ckpt").read_bytes()
    again = Trainer(_model(), chunk_dataset, _cfg(tmp_path, 6))
    monkeypatch.setattr(again, "_phase_loss", lambda batch: float("nan"))
    with pytest.raises(FloatingPointError, match="loss is nan at step 3; last good checkpoint kept"):
        again.fit(progress=False)
    assert (tmp_path / "last.ckpt").read_bytes() == saved


def test_corrupt_checkpoint_and_wrong_phase_raise(tmp_path, chunk_dataset):
    Trainer(_model(), chunk_dataset, _cfg(tmp_path, 3)).fit(progress=False)
    with pytest.raises(ValueError, match="for phase 'slow', not 'vae'"):
        Trainer(_model(), chunk_dataset, TrainConfig(phase="vae", steps=3, out_dir=str(tmp_path))).fit(progress=False)
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt or truncated checkpoint"):
        Trainer(_model(), chunk_dataset, _cfg(tmp_path, 6)).fit(progress=False)
    with pytest.raises(ValueError, match="unknown phase"):
        TrainConfig(phase="fast")


def test_slow_fast_phase_updates_phi_with_theta_frozen(tmp_path, synthetic_episodes):
    model = _model()
    episodes = EpisodeDataset(synthetic_episodes[:8], context_frames=2, new_frames=2, num_chunks=3)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    trainer = Trainer(model, episodes, TrainConfig(phase="slow_fast", steps=2, batch_size=2, lr=1e-3,
                                                    out_dir=str(tmp_path)))
    history = trainer.fit(progress=False)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
    after = {k.replace(".base_layer.", "."): v for k, v in model.unet.state_dict().items() if "lora_" not in k}
    assert after.keys() == before.keys()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert changed, "Φ was not updated"
    assert trainer.memory.num_parameters() > 0
    assert all(p.grad is None for p in trainer.memory.params), "Θ took part in the outer update"


def test_vae_phase_reduces_reconstruction_error(tmp_path, chunk_dataset):
    model = _model()
    frames = torch.stack([chunk_dataset[i]["target"] for i in range(8)])

    def recon_error() -> float:
        with torch.no_grad():
            lat = model.encode_frames(frames)
            return (model.decode_latents(lat).float() - frames.float()).abs().mean().item()

    before = recon_error()
    Trainer(model, chunk_dataset, TrainConfig(phase="vae", steps=40, batch_size=8, lr=2e-3,
                                              out_dir=str(tmp_path))).fit(progress=False)
    assert recon_error() < 0.6 * before
    assert model.config.vae_scaling_factor != 1.0

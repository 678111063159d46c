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


def test_cosine_schedule_warms_up_then_decays_to_its_floor(tmp_path, chunk_dataset):
    cfg = _cfg(tmp_path, 6, warmup_steps=2, lr_schedule="cosine", min_lr_ratio=0.1)
    history = Trainer(_model(), chunk_dataset, cfg).fit(progress=False)
    lrs = [r["lr"] for r in history]
    assert lrs[:2] == pytest.approx([5e-4, 1e-3])  # linear warm-up
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:])) and lrs[-1] == pytest.approx(1e-4)  # decays to the floor
    constant = Trainer(_model(), chunk_dataset, _cfg(tmp_path / "c", 3, warmup_steps=2)).fit(progress=False)
    assert [r["lr"] for r in constant] == pytest.approx([5e-4, 1e-3, 1e-3])
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")


def test_cosine_decays_by_the_deadline_and_a_rerun_continues_the_decay(tmp_path, chunk_dataset, monkeypatch):
    """A run the time limit stops at step 7 of 100 still ends near the floor; the rerun goes on from there."""
    import types

    import worldmodel.train as train_module

    clock = iter(range(10_000))  # one tick per reading: the deadline check and the schedule each read it per step
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(time=lambda: float(next(clock)),
                                                                    perf_counter=train_module.time.perf_counter))

    def run(out, deadline, by_deadline=True):
        cfg = _cfg(out, 100, lr_schedule="cosine", min_lr_ratio=0.1, deadline=deadline,
                   decay_by_deadline=by_deadline)
        trainer = Trainer(_model(), chunk_dataset, cfg)
        return trainer, [r["lr"] for r in trainer.fit(progress=False)]

    first, lrs = run(tmp_path / "a", deadline=14.0)
    assert 4 <= first.step <= 8  # stopped by the deadline, far from step 100
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 2.5e-4  # decayed most of the way by the clock
    steps_only = run(tmp_path / "b", deadline=next(clock) + 14.0, by_deadline=False)[1]
    assert len(steps_only) < 20 and min(steps_only) > 9e-4  # the step-based cosine alone has hardly moved
    again, more = run(tmp_path / "a", deadline=next(clock) + 10.0)  # a rerun resumes the decay, not its start
    assert more[:len(lrs)] == lrs and again.step > first.step  # the history goes on from the checkpoint
    assert max(more[len(lrs):]) <= lrs[-1] * 1.001
    with pytest.raises(TypeError):
        TrainConfig(decay_by_time=True)


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


def _watch_inner_loop(trainer) -> list[dict]:
    """Record, at every inner (fast) update, whether Θ arrived with a gradient from the outer loss, and Θ
    before and after the update."""
    seen, real = [], trainer.memory.update

    def update(*args, **kwargs):
        theta = trainer.memory.theta
        before = theta.detach().clone()
        out = real(*args, **kwargs)
        seen.append({"outer_grad": theta.grad is not None or theta.requires_grad, "before": before,
                     "theta": trainer.memory.theta.detach().clone(), "rows": len(args[1])})
        return out

    trainer.memory.update = update
    return seen


def test_slow_fast_phase_updates_phi_with_theta_frozen(tmp_path, synthetic_episodes):
    """Θ moves in the inner loop, one Θ per episode of the batch, and is untouched by the outer step
    (guards: Θ put among the outer optimizer's parameters, Θ given a gradient by the outer loss, an inner
    update that never writes Θ)."""
    model = _model()
    episodes = EpisodeDataset(synthetic_episodes[:8], context_frames=2, new_frames=2, num_chunks=3)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    trainer = Trainer(model, episodes, TrainConfig(phase="slow_fast", steps=2, batch_size=2, lr=1e-3,
                                                    out_dir=str(tmp_path)))
    assert trainer.memory.num_envs == 2  # one Θ per episode of the batch
    theta = trainer.memory.theta
    assert not any(p is theta for group in trainer.optimizer.param_groups for p in group["params"])
    seen = _watch_inner_loop(trainer)
    history = trainer.fit(progress=False)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
    after = {k: v for k, v in model.unet.state_dict().items()}
    assert after.keys() == before.keys()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert changed, "Φ was not updated"
    assert len(seen) == 2 * 3 and all(s["rows"] == 2 for s in seen)  # steps x chunks, both episodes at once
    assert not any(s["outer_grad"] for s in seen), "the outer loss gave Θ a gradient"
    for s in seen:  # every episode's Θ moved at every inner update
        assert (s["theta"] - s["before"]).abs().sum(dim=1).min() > 0, "Θ did not move in the inner loop"
    assert not torch.equal(seen[0]["theta"][0], seen[0]["theta"][1])  # each episode has its own Θ
    assert torch.equal(trainer.memory.theta, seen[-1]["theta"]), "the outer step moved Θ"
    trainer.params.append(trainer.memory.theta)  # the mutation the trainer refuses
    with pytest.raises(RuntimeError, match="outer optimizer"):
        trainer.check_theta_outside()


def test_meta_gradient_reaches_phi_through_the_last_fast_step(tmp_path, synthetic_episodes):
    """With ``meta_gradient`` the outer loss of chunk k+1 also differentiates Θ's update on chunk k with respect
    to Φ: the same losses and the same Θ as a first-order episode (the rebuilt step is zero in value), a different
    gradient for Φ (guards: the step's gradient taken without ``create_graph``, `meta` not added where Θ is applied)."""
    episodes = EpisodeDataset(synthetic_episodes[:8], context_frames=2, new_frames=2, num_chunks=3)
    runs = {}
    for meta in (0.0, 1.0, 0.5):
        trainer = Trainer(_model(), episodes, TrainConfig(phase="slow_fast", steps=1, batch_size=2, lr=1e-3,
                                                          out_dir=str(tmp_path / str(meta)), meta_gradient=meta))
        trainer.memory.config.lr = 1e-2  # a step large enough for its second-order effect to show
        trainer.model.train()
        batch = next(iter(trainer._loader()))
        torch.manual_seed(1)
        loss = trainer._slow_fast_episode(batch)
        grads = {n: p.grad.detach().clone() for n, p in trainer.model.unet.named_parameters() if p.grad is not None}
        runs[meta] = loss, trainer.memory.theta.detach().clone(), grads, trainer.memory.meta
    (loss0, theta0, grads0, _), (loss1, theta1, grads1, meta_left) = runs[0.0], runs[1.0]
    assert meta_left is None  # nothing of the episode's graph outlives it
    assert loss1 == pytest.approx(loss0, rel=1e-4)
    assert torch.allclose(theta1, theta0, atol=1e-3)  # the math attention kernel rounds differently (steps ~1e-2)
    assert grads0.keys() == grads1.keys()
    diff = sum((grads1[n] - grads0[n]).norm() ** 2 for n in grads0) ** 0.5
    norm = sum(g.norm() ** 2 for g in grads0.values()) ** 0.5
    assert diff > 1e-3 * norm, f"the meta-gradient changed Φ's gradient by only {float(diff / norm):.2e} of it"
    half = runs[0.5][2]  # the weight scales the second-order term alone
    assert all(torch.allclose(half[n] - grads0[n], 0.5 * (grads1[n] - grads0[n]), rtol=1e-2, atol=1e-3 * float(diff))
               for n in grads0)


def test_meta_gradient_reaches_phi_through_every_earlier_update(tmp_path, synthetic_episodes):
    """With ``meta_updates=0`` the last chunk's loss differentiates the first chunk's fast update too (the cube hidden
    at chunk 3-5 is scored at the reopen, 6-10 chunks later); with ``meta_updates=1`` the last update alone. Same
    losses, different gradients for Φ (guard: each update's rebuilt step replacing, not joining, the earlier ones)."""
    episodes = EpisodeDataset(synthetic_episodes[:8], context_frames=2, new_frames=2, num_chunks=3)
    runs = {}
    for reach in (0, 1):
        trainer = Trainer(_model(), episodes, TrainConfig(phase="slow_fast", steps=1, batch_size=2, lr=1e-3,
                                                          out_dir=str(tmp_path / str(reach)), meta_gradient=1.0,
                                                          meta_updates=reach))
        trainer.memory.config.lr = 1e-2
        trainer.model.train()
        batch = next(iter(trainer._loader()))
        torch.manual_seed(1)
        loss = trainer._slow_fast_episode(batch)
        grads = {n: p.grad.detach().clone() for n, p in trainer.model.unet.named_parameters() if p.grad is not None}
        runs[reach] = loss, grads
    (loss_all, grads_all), (loss_last, grads_last) = runs[0], runs[1]
    assert loss_all == pytest.approx(loss_last, rel=1e-4)
    diff = sum((grads_all[n] - grads_last[n]).norm() ** 2 for n in grads_last) ** 0.5
    norm = sum(g.norm() ** 2 for g in grads_last.values()) ** 0.5
    assert diff > 1e-4 * norm, f"chunk 0's update changed Φ's gradient by only {float(diff / norm):.2e} of it"
    with pytest.raises(ValueError, match="meta_updates"):
        TrainConfig(phase="slow_fast", meta_updates=-1)


def test_slow_fast_windows_span_a_first_visit_and_its_revisit(tmp_path):
    """The shipped train config's slow-fast windows hold >= 12 chunks (a scene memory episode's first visit
    and its revisit are 6-8 chunks apart); a tiny run trains on one such window, Θ learning every chunk."""
    from envs.synthetic import random_episodes
    from experiments.train import slow_fast_windows
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from pathlib import Path

    conf = Path(__file__).resolve().parents[1] / "experiments" / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["preset=tiny"])
    n = cfg.data.episode_chunks
    assert n >= 12 and cfg.data.synthetic_chunks >= n
    model = _model()
    episodes = random_episodes(2, n, seed=0, frame_size=32, chunk_len=2)
    windows = slow_fast_windows(episodes, model.config, cfg.data)
    assert len(windows) == 2 and windows[0]["actions"].shape[0] == n
    trainer = Trainer(model, windows, TrainConfig(phase="slow_fast", steps=1, batch_size=1, lr=1e-3,
                                                  out_dir=str(tmp_path)))
    seen = _watch_inner_loop(trainer)
    trainer.fit(progress=False)
    assert len(seen) == n
    with pytest.raises(ValueError, match="no episode has"):
        slow_fast_windows(random_episodes(1, 3, frame_size=32, chunk_len=2), model.config,
                          OmegaConf.merge(cfg.data, {"episode_chunks": 4}))


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


def test_a_trained_model_keeps_the_heads_and_start_frames_of_the_model_it_started_from(tmp_path):
    """`experiments.train init_from=M` saves a model with M's reward heads and real start frames beside its new
    weights (without heads every `SlowFastVGen-v0` reward is 0), also when the saved model replaces M itself."""
    from pathlib import Path

    import numpy as np
    from hydra import compose, initialize_config_dir

    from experiments import train as train_script
    from worldmodel.heads import HeadsConfig, RewardHeads

    init = tmp_path / "run" / "model"
    model = _model()
    model.save_pretrained(init)
    frame = model.config.frame_size
    RewardHeads(HeadsConfig(frame_size=frame, channels=(4,), text_dim=8, hidden=8)).save_pretrained(init / "heads")
    starts = np.random.default_rng(0).integers(0, 256, (3, frame, frame, 3), dtype=np.uint8)
    np.savez(init / "start_frames.npz", frames=starts)
    heads_files = {p.name: p.read_bytes() for p in (init / "heads").iterdir()}
    conf = Path(__file__).resolve().parents[1] / "experiments" / "conf"
    overrides = [f"init_from={init}", f"out_dir={tmp_path / 'run'}", "progress=false", "data.synthetic_episodes=2",
                 "data.synthetic_chunks=2", "phases.vae.steps=0", "phases.slow.steps=1", "phases.slow.batch_size=2",
                 "phases.slow_fast.steps=0", "phases.distill.steps=0"]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        saved = train_script.run(compose(config_name="train", overrides=overrides))
    assert saved == init and (saved / "config.json").is_file()
    assert {p.name: p.read_bytes() for p in (saved / "heads").iterdir()} == heads_files
    with np.load(saved / "start_frames.npz") as kept:
        assert np.array_equal(kept["frames"], starts)
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # nothing left aside


def test_experiments_train_refuses_a_student_before_any_phase_trains(tmp_path):
    """`experiments.train init_from=<a distilled student>` with a VAE phase before the slow one stops at the start,
    naming the student, with nothing trained; `+phases.slow.from_student=true` lets the run go through."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from experiments import train as train_script

    init = tmp_path / "student"
    model = _model()
    model.config.distilled_from, model.config.sample_steps = 8, 2
    model.save_pretrained(init)
    conf = Path(__file__).resolve().parents[1] / "experiments" / "conf"
    overrides = [f"init_from={init}", f"out_dir={tmp_path / 'run'}", "progress=false", "data.synthetic_episodes=2",
                 "data.synthetic_chunks=2", "phases.vae.steps=1", "phases.vae.batch_size=2", "phases.slow.steps=1",
                 "phases.slow.batch_size=2", "phases.slow_fast.steps=0", "phases.distill.steps=0"]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(ValueError, match="slow: the model is a student distilled from 8 passes to 2"):
            train_script.run(compose(config_name="train", overrides=overrides))
        assert not (tmp_path / "run" / "vae").exists()
        saved = train_script.run(compose(config_name="train", overrides=overrides + ["+phases.slow.from_student=true"]))
    assert (saved / "config.json").is_file()


def test_the_device_sessions_train_overrides_name_keys_the_fast_config_has():
    """Every plain `phases.<phase>.<key>=` override that `experiments/device_session.sh` passes to
    `experiments.train --config-name train_fast` names a key the composed config has (Hydra rejects one it lacks,
    and on the device machine that costs a call: session 45's first `distill_bg` stopped on
    `phases.distill.lr_schedule`), and each phase's composed config is a valid TrainConfig."""
    import re
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    root = Path(__file__).resolve().parents[1]
    script = (root / "experiments" / "device_session.sh").read_text()
    plain = set(re.findall(r"(?<![+\w.])phases\.(\w+)\.(\w+)=", script))
    assert ("distill", "lr_schedule") in plain and len(plain) > 20  # the pattern still finds the script's overrides
    with initialize_config_dir(config_dir=str(root / "experiments" / "conf"), version_base="1.3"):
        cfg = compose(config_name="train_fast")
    missing = sorted(f"phases.{phase}.{key}" for phase, key in plain
                     if phase not in cfg.phases or key not in cfg.phases[phase])
    assert not missing, f"device_session.sh overrides keys train_fast.yaml lacks (add them, or pass +key): {missing}"
    for phase, values in cfg.phases.items():
        TrainConfig(phase=phase, **OmegaConf.to_container(values, resolve=True))

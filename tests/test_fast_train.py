"""The fast slow phase: on-device latent cache, EMA, exact resume, batch-chunked attention (CPU, tiny models)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Subset, default_collate

from envs.synthetic import SYNTHETIC_SKILLS
from worldmodel.action import parse_action
from worldmodel.attention import BatchChunkedAttnProcessor, sdpa_backends, use_chunked_attention
from worldmodel.latent_cache import LatentCache, encode_cached_action
from worldmodel.model import SlowFastVGen, batch_action
from worldmodel.train import StepBatchSampler, Trainer, TrainConfig, load_checkpoint, step_indices


_TEXT: dict[str, torch.Tensor] = {}


def _text_embeddings() -> dict[str, torch.Tensor]:
    """The synthetic skills' text-model states, computed once (loading the text model draws random numbers)."""
    if not _TEXT:
        encoder = SlowFastVGen.from_preset("tiny").action_encoder
        encoder.embed_texts(list(SYNTHETIC_SKILLS))
        _TEXT.update(encoder.text_cache)
    return _TEXT




def _model(**overrides) -> SlowFastVGen:
    text = _text_embeddings()
    torch.manual_seed(0)
    model = SlowFastVGen.from_preset("tiny", **overrides)
    model.action_encoder.load_text_cache(text)
    return model


def _windows(chunk_dataset, n: int = 48) -> Subset:
    return Subset(chunk_dataset, range(n))


def _cfg(out, steps: int, **kw) -> TrainConfig:
    base = dict(phase="slow", steps=steps, batch_size=4, lr=1e-3, log_every=1, checkpoint_every=3,
                latent_cache=True, out_dir=str(out))
    return TrainConfig(**{**base, **kw})


def _weights(model: SlowFastVGen) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.weights_state_dict().items() if k.startswith(("unet.", "action_encoder."))}


def test_latent_cache_equals_the_per_batch_vae_encode(chunk_dataset):
    model = _model().eval()
    windows = _windows(chunk_dataset, 20)
    cache = LatentCache.build(model, windows, "cpu", batch_size=7)
    assert len(cache) == 20 and cache.texts == sorted({windows[i]["text"] for i in range(20)})
    index = torch.tensor([3, 0, 19, 3, 11])
    got = cache.batch(index)
    batch = default_collate([windows[i] for i in index.tolist()])
    torch.testing.assert_close(got.latents, model.batch_latents(batch), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.vectors, batch["action"])
    torch.testing.assert_close(got.text_emb, model.action_encoder.embed_texts(batch["text"]))
    # the conditioning tokens from the cache are the encoder's own, with and without condition dropout
    enc = model.action_encoder
    drop = torch.tensor([[True, False], [False, False], [False, True], [True, True], [False, False]])
    for d in (None, drop):
        expected = enc(parse_action(batch_action(batch, model.config), model.config, 5), 5, d)
        torch.testing.assert_close(encode_cached_action(enc, got.text_emb, got.vectors, d, 5), expected)
    # bfloat16 storage halves the memory and stays close
    half = LatentCache.build(model, windows, "cpu", dtype=torch.bfloat16)
    assert half.latents.dtype == torch.bfloat16 and half.nbytes < cache.nbytes
    torch.testing.assert_close(half.batch(index).latents, got.latents, rtol=2e-2, atol=2e-2)


def test_step_indices_are_the_samplers_batches():
    sampler = StepBatchSampler(10, 4, seed=3, start_step=0, num_steps=6, rank=1, num_processes=2)
    assert [step_indices(10, 4, 3, s, 1, 2).tolist() for s in range(6)] == list(sampler)
    assert [sampler._index(k) for k in range(2 * 4 + 1, 3 * 4, 2)] == step_indices(10, 4, 3, 2, 1, 2).tolist()


def test_cached_step_is_the_models_loss_with_the_same_draws(chunk_dataset):
    """Condition dropout, noise and timesteps come in `SlowFastVGen.latent_loss`'s order: same seed, same loss."""
    model = _model().train()
    windows = _windows(chunk_dataset)
    trainer = Trainer(model, windows, _cfg("unused", 1))
    cache = trainer.build_cache()
    index = step_indices(len(cache), 8, seed=0, step=2)
    cached = cache.batch(index)
    batch = default_collate([windows[i] for i in index.tolist()])
    table = model.scheduler.alphas_cumprod.float().clone()  # what a step passes: the schedule on the device
    for seed, alphas in ((1, None), (2, table)):
        torch.manual_seed(seed)
        expected = model.latent_loss(cached.latents, batch)
        torch.manual_seed(seed)
        drop, noise, t = trainer._draw_noise(cached)
        got = trainer._cached_loss(cached.latents, cached.text_emb, cached.vectors, drop, noise, t, alphas)
        torch.testing.assert_close(got, expected)


def test_ema_moves_toward_the_weights_and_is_what_is_saved(tmp_path, chunk_dataset):
    model = _model()
    start = _weights(model)
    trainer = Trainer(model, _windows(chunk_dataset), _cfg(tmp_path, 1, ema_decay=0.99))
    assert trainer.ema_decay_at(1) == pytest.approx(2 / 11)  # warm-up: the first updates average few steps
    trainer.fit(progress=False)
    ckpt = load_checkpoint(tmp_path / "last.ckpt")
    raw, ema = ckpt["model"], ckpt["ema"]
    held = _weights(model)
    assert set(ema) == set(held)
    moved = 0
    for k, v in held.items():
        torch.testing.assert_close(v, ema[k])  # the model holds the EMA after fit
        torch.testing.assert_close(ema[k], (2 / 11) * start[k] + (9 / 11) * raw[k])  # one step of the average
        moved += int(not torch.equal(raw[k], start[k]))
    assert moved > 0
    model.save_pretrained(tmp_path / "model")
    saved = SlowFastVGen.from_pretrained(tmp_path / "model").weights_state_dict()
    assert all(torch.equal(saved[k], v) for k, v in held.items())
    # no EMA: the model keeps its last weights
    plain = Trainer(_model(), _windows(chunk_dataset), _cfg(tmp_path / "plain", 1))
    plain.fit(progress=False)
    assert plain.ema is None and "ema" not in load_checkpoint(tmp_path / "plain" / "last.ckpt")


def test_killed_cached_run_resumes_exactly(tmp_path, chunk_dataset, kill_at_step):
    windows = _windows(chunk_dataset)
    kw = dict(ema_decay=0.9, log_every=2, fused_adamw=True)  # checkpoint at 3 falls inside a logging interval
    ref_model = _model()
    reference = Trainer(ref_model, windows, _cfg(tmp_path / "a", 6, **kw)).fit(progress=False)

    killed = Trainer(_model(), windows, _cfg(tmp_path / "b", 6, **kw))
    kill_at_step(killed, "_draw_noise", 4)
    with pytest.raises(KeyboardInterrupt):
        killed.fit(progress=False)
    resumed_model = _model()
    history = Trainer(resumed_model, windows, _cfg(tmp_path / "b", 6, **kw)).fit(progress=False)
    assert [r["step"] for r in history] == [2, 4, 6]
    torch.testing.assert_close([r["loss"] for r in history], [r["loss"] for r in reference], rtol=1e-5, atol=1e-7)
    a, b = load_checkpoint(tmp_path / "a" / "last.ckpt"), load_checkpoint(tmp_path / "b" / "last.ckpt")
    for key in ("model", "ema"):
        for k, v in a[key].items():
            torch.testing.assert_close(b[key][k], v, rtol=1e-5, atol=1e-7)
    ref, res = _weights(ref_model), _weights(resumed_model)
    assert all(torch.allclose(res[k], v, rtol=1e-5, atol=1e-7) for k, v in ref.items())


def _fixed_noise_loss(model: SlowFastVGen, windows) -> float:
    batch = default_collate([windows[i] for i in range(0, len(windows), len(windows) // 16)][:16])
    model.eval()
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(123)
        return model.training_loss(batch).item()


def test_fast_path_lowers_the_loss(tmp_path, chunk_dataset):
    model = _model()
    before = _fixed_noise_loss(model, chunk_dataset)
    cfg = _cfg(tmp_path, 24, batch_size=8, lr=2e-3, warmup_steps=4, log_every=8, checkpoint_every=24,
               ema_decay=0.95, fused_adamw=True)
    history = Trainer(model, chunk_dataset, cfg).fit(progress=False)
    after = _fixed_noise_loss(model, chunk_dataset)  # the EMA weights
    assert len(history) == 3 and after < 0.7 * before, (before, after, history)


def test_non_finite_loss_is_caught_at_the_next_log(tmp_path, chunk_dataset, monkeypatch):
    trainer = Trainer(_model(), _windows(chunk_dataset), _cfg(tmp_path, 6, log_every=3, checkpoint_every=6))
    real = trainer._cached_loss
    monkeypatch.setattr(trainer, "_cached_loss", lambda *a: real(*a) * (float("nan") if trainer.step == 1 else 1.0))
    with pytest.raises(FloatingPointError, match="loss is not finite at step 1"):
        trainer.fit(progress=False)
    assert trainer.step == 3 and not (tmp_path / "last.ckpt").exists()


def test_chunked_attention_matches_one_call_and_every_backend_name_runs():
    model = _model().eval()
    # built chunked, so every path (env, evaluation, fast update) runs at any batch size
    assert all(isinstance(p, BatchChunkedAttnProcessor) for p in model.unet.attn_processors.values())
    mc = model.config
    x = torch.randn(2, 2 * mc.latent_channels + 1, mc.chunk_frames, mc.latent_size, mc.latent_size)
    t, cond = torch.tensor([10, 500]), torch.randn(2, 3, mc.cross_attention_dim)
    with torch.no_grad():
        whole = model.unet(x, t, encoder_hidden_states=cond).sample
        model.unet.set_attn_processor(BatchChunkedAttnProcessor(max_batch=50))  # temporal: 2 x 8 x 8 sequences
        chunked = model.unet(x, t, encoder_hidden_states=cond).sample
        use_chunked_attention(model.unet)
        for name in ("auto", "math", "default"):
            with sdpa_backends(name):
                torch.testing.assert_close(model.unet(x, t, encoder_hidden_states=cond).sample, whole)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown attention backend"):
        TrainConfig(attention="fastest")


def _two_process_windows() -> Subset:
    """conftest's chunk windows, first 21 (not divisible by 2: the last share is padded, then cut)."""
    from envs.data import ChunkDataset
    from envs.synthetic import random_episodes

    return _windows(ChunkDataset(random_episodes(64, 6, seed=0, frame_size=32, chunk_len=2, speed=8), 2, 2), 21)


def _worker(tmp: Path) -> None:
    """What each of the two torchrun processes runs: 3 cached steps with EMA, then its cache and weights."""
    torch.set_num_threads(1)
    _TEXT.update(load_file(str(tmp / "text.safetensors")))
    trainer = Trainer(_model(), _two_process_windows(), _cfg(tmp / "two", 3, ema_decay=0.9))
    trainer.fit(progress=False)
    torch.save({"latents": trainer.cache.latents, "texts": trainer.cache.text_ids, "weights": _weights(trainer.model),
                "losses": [r["loss"] for r in trainer.history]}, tmp / f"rank{torch.distributed.get_rank()}.pt")


def test_two_processes_share_one_cache_and_stay_in_sync(tmp_path, torchrun):
    """`torchrun --nproc-per-node 2` (gloo): each process encodes half the windows and gets the whole cache."""
    save_file(_text_embeddings(), str(tmp_path / "text.safetensors"))
    ranks = torchrun(__file__, tmp_path, timeout=600)
    one = LatentCache.build(_model().eval(), _two_process_windows(), "cpu")
    for r in ranks:
        torch.testing.assert_close(r["latents"], one.latents, rtol=1e-5, atol=1e-5)
        assert torch.equal(r["texts"], one.text_ids)
    assert all(torch.equal(v, ranks[1]["weights"][k]) for k, v in ranks[0]["weights"].items())
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(ranks[0]["losses"]) == 3


def test_export_checkpoint_gives_the_model_the_run_saves(tmp_path, chunk_dataset):
    """A run's last checkpoint, exported, is the model the run saves when it ends there: EMA in place."""
    from experiments.export_checkpoint import main as export

    model = _model()
    model.save_pretrained(tmp_path / "init")
    start = _weights(model)
    Trainer(model, _windows(chunk_dataset), _cfg(tmp_path / "run", 3, ema_decay=0.99)).fit(progress=False)
    saved = _weights(model)  # fit put the moving average into the model
    export(["--init", str(tmp_path / "init"), "--checkpoint", str(tmp_path / "run" / "last.ckpt"),
            "--out", str(tmp_path / "exported"), "--dtype", "float32"])
    exported = SlowFastVGen.from_pretrained(tmp_path / "exported").weights_state_dict()
    assert all(torch.equal(exported[k], v) for k, v in saved.items())
    assert any(not torch.equal(exported[k], v) for k, v in start.items())
    _model(unet_layers_per_block=2).save_pretrained(tmp_path / "other")
    with pytest.raises(SystemExit, match="does not fit"):  # another architecture's checkpoint
        export(["--init", str(tmp_path / "other"), "--checkpoint", str(tmp_path / "run" / "last.ckpt"),
                "--out", str(tmp_path / "wrong")])


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))

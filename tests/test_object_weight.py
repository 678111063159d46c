"""The slow phase's cube-weighted loss (`TrainConfig.object_weight`): the weight map, both training paths agree,
weight 0 is the old loss exactly, and the weighting reaches the loss and its gradient (CPU, tiny model)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Subset, default_collate

import worldmodel.model as model_module
from envs.data import ChunkDataset, EpisodeDataset
from envs.real.objects import CUBE_PIXEL_FIELDS
from worldmodel.diffusion import masked_mse, object_loss_weights, revisit_chunks
from worldmodel.latent_cache import LatentCache
from worldmodel.train import Trainer, TrainConfig, step_indices

from test_fast_train import _cfg, _model  # tests/ is on sys.path (pytest's default import mode)

W = 5.0


def _with_cube(episodes: list[dict], num: int = 8) -> list[dict]:
    """`num` of the synthetic episodes with a made-up cube track: it walks across the 32 px frames and is hidden
    (visible 0, coordinates far away) at every 5th frame, so hidden frames must be ignored to get the map right."""
    out = []
    for i, ep in enumerate(episodes[:num]):
        t = np.arange(len(ep["frames"]), dtype=np.float32)
        x, y = (3 + 2 * t + i) % 32 + 0.5, (5 + t) % 32 + 0.5
        visible = np.where(t % 5 == 3, 0.0, 1.0).astype(np.float32)
        x, y = np.where(visible > 0, x, 1000.0), np.where(visible > 0, y, -1000.0)
        record = np.stack([x, y, np.full_like(t, 1.5), visible, x, y], axis=1).astype(np.float32)
        attrs = {**ep["attrs"], "cube_pixel_fields": ",".join(CUBE_PIXEL_FIELDS)}
        out.append({**ep, "cube_pixel": record, "attrs": attrs})
    return out


@pytest.fixture(scope="module")
def cube_windows(synthetic_episodes) -> ChunkDataset:
    return ChunkDataset(_with_cube(synthetic_episodes), context_frames=2, new_frames=2)


def _reference_map(pixels: np.ndarray, width: float, size: int, new_frames: int, weight: float,
                   radius: int) -> np.ndarray:
    """The weight map by loops, from the spec: (B, size, size)."""
    out = np.ones((len(pixels), size, size))
    for b, rows in enumerate(pixels):
        for x, y, visible in rows[-(new_frames + 1):]:
            if not visible > 0:
                continue
            cx, cy = int(np.floor(x * size / width)), int(np.floor(y * size / width))
            for r in range(size):
                for c in range(size):
                    if abs(r - cy) <= radius and abs(c - cx) <= radius:
                        out[b, r, c] = 1 + weight
    return out


def test_weight_map_marks_the_cube_cells_of_the_last_context_and_new_frames():
    nan = float("nan")
    # 64 px frames, 16x16 latents (4 px a cell); rows: 2 context frames, then 2 new frames
    pixels = torch.tensor([
        [[0.5, 0.5, 1.0], [10.5, 40.2, 0.4], [60.0, 60.0, 0.0], [33.0, 5.0, 1.0]],  # frame 0: not the last context
        [[nan, nan, 0.0]] * 4,  # no record
        [[nan, nan, 0.0], [nan, nan, 0.0], [63.9, 0.0, 0.3], [nan, nan, 0.0]],  # only one new frame shows it
    ])
    got = object_loss_weights(pixels, torch.tensor([64, 64, 64]), 16, 2, W, 1)
    assert got.shape == (3, 1, 1, 16, 16)
    expected = torch.ones(3, 16, 16)
    expected[0, 9:12, 1:4] = 1 + W  # last context frame: x 10.5 -> column 2, y 40.2 -> row 10
    expected[0, 0:3, 7:10] = 1 + W  # second new frame: column 8, row 1; the hidden first new frame is ignored
    expected[2, 0:2, 14:16] = 1 + W  # the corner (column 15, row 0), cut at the edge
    assert torch.equal(got[:, 0, 0], expected)
    # radius 0: the cube's own cell; frames twice as wide put the same pixels in cells half as far
    got = object_loss_weights(pixels[:1], 128.0, 16, 2, W, 0)[0, 0, 0]
    assert torch.nonzero(got > 1).tolist() == [[0, 4], [5, 1]]
    assert torch.equal(object_loss_weights(pixels[1:2], 64, 16, 2, W, 3), torch.ones(1, 1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"object_pixels must be \(B, F >= 3, 3\)"):
        object_loss_weights(pixels[:, :2], 64, 16, 2, W, 1)
    with pytest.raises(ValueError, match="must be >= 0"):
        object_loss_weights(pixels, 64, 16, 2, -1.0, 1)


def test_config_checks():
    for kw, match in ((dict(object_weight=-1.0), "object_weight must be"),
                      (dict(object_weight=float("nan")), "object_weight must be"),
                      (dict(object_radius=-1), "object_radius must be"),
                      (dict(object_radius=1.5), "object_radius must be")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**kw)
    assert TrainConfig(object_weight=5).object_weight == 5.0  # Hydra hands `phases.slow.object_weight=5` an int


def test_dataset_windows_give_the_expected_maps(cube_windows, chunk_dataset):
    items = [cube_windows[i] for i in range(len(cube_windows))]
    batch = default_collate(items)
    assert batch["object_pixels"].shape == (len(items), 4, 3) and batch["frame_width"].tolist() == [32] * len(items)
    got = object_loss_weights(batch["object_pixels"], batch["frame_width"], 8, 2, W, 1)[:, 0, 0].numpy()
    expected = _reference_map(batch["object_pixels"].numpy(), 32, 8, 2, W, 1)
    np.testing.assert_array_equal(got, expected)
    assert (got > 1).any(axis=(1, 2)).all()  # every window shows the cube somewhere
    # the synthetic world has no cube: NaN records, visible 0, all ones
    plain = default_collate([chunk_dataset[i] for i in range(4)])
    assert torch.isnan(plain["object_pixels"][..., :2]).all() and (plain["object_pixels"][..., 2] == 0).all()
    assert torch.equal(object_loss_weights(plain["object_pixels"], plain["frame_width"], 8, 2, W, 1),
                       torch.ones(4, 1, 1, 8, 8))


def test_weight_zero_is_the_old_loss_exactly(cube_windows):
    model = _model().train()
    batch = default_collate([cube_windows[i] for i in range(6)])
    old = {k: v for k, v in batch.items() if k not in ("object_pixels", "frame_width")}
    losses = []
    for b, w in ((old, 0.0), (batch, 0.0), (old, W)):
        torch.manual_seed(3)
        losses.append(model.training_loss(b, w, 1))
    assert torch.equal(losses[0], losses[1]) and torch.equal(losses[0], losses[2])  # no record: no weights either
    torch.manual_seed(3)
    assert not torch.allclose(model.training_loss(batch, W, 1), losses[0])
    pred, target = torch.randn(2, 4, 4, 8, 8), torch.randn(2, 4, 4, 8, 8)
    given = torch.tensor([[True, True, False, False]] * 2)
    for per_sample in (False, True):  # all-ones weights: the plain mean, up to rounding
        torch.testing.assert_close(masked_mse(pred, target, given, per_sample, torch.ones(2, 1, 1, 8, 8)),
                                   masked_mse(pred, target, given, per_sample))


def test_slow_fast_weighs_each_chunk_by_its_own_cube_rows(synthetic_episodes, tmp_path):
    """An episode run's rows c*Tn : c*Tn + Tc + Tn are chunk c's ChunkDataset rows, and the slow-fast outer loss
    of each chunk is the slow phase's weighted loss with them (weight 0, or no record: the plain loss)."""
    cube = _with_cube(synthetic_episodes, 2)
    runs, windows = EpisodeDataset(cube, 2, 2, num_chunks=3), ChunkDataset(cube, 2, 2)
    run, first = runs[0], len(cube[0]["language"]) - 3  # the run ends at the episode's last chunk
    assert run["object_pixels"].shape == (2 + 3 * 2, 3) and run["frame_width"] == 32
    for c in range(3):  # the first episode's windows come first, one per chunk
        torch.testing.assert_close(run["object_pixels"][c * 2 : c * 2 + 4], windows[first + c]["object_pixels"])
    plain_runs = EpisodeDataset(synthetic_episodes[:2], 2, 2, num_chunks=3)

    def first_step_losses(data, weight):
        trainer = Trainer(_model(), data, TrainConfig(phase="slow_fast", steps=1, batch_size=2, lr=1e-3,
                                                      out_dir=str(tmp_path / f"{weight}"), object_weight=weight))
        seen = []
        latent_loss = trainer.model.latent_loss

        def spy(latents, batch, object_weight=0.0, object_radius=1, sample_weights=None):
            seen.append(trainer.model.object_weights(batch, object_weight, object_radius, latents.device))
            return latent_loss(latents, batch, object_weight, object_radius, sample_weights)

        trainer.model.latent_loss = spy
        trainer.model.train()
        torch.manual_seed(1)
        return trainer._slow_fast_episode(next(iter(trainer._loader()))), seen

    plain, seen = first_step_losses(runs, 0.0)
    assert seen == [None] * 3
    weighted, seen = first_step_losses(runs, W)
    assert len(seen) == 3 and all(w is not None and (w > 1).any() for w in seen)
    batch = default_collate([runs[0], runs[1]])
    for c, w in enumerate(seen):  # each chunk's map is the one its own rows give
        rows = {"object_pixels": batch["object_pixels"][:, c * 2 : c * 2 + 4], "frame_width": batch["frame_width"]}
        torch.testing.assert_close(w, _model().object_weights(rows, W, 1, torch.device("cpu")), rtol=0, atol=0)
    assert weighted != pytest.approx(plain, rel=1e-4)
    no_record, seen = first_step_losses(plain_runs, W)  # no cube record: weight 1 everywhere, the plain loss
    assert len(seen) == 3 and all(torch.equal(w, torch.ones_like(w)) for w in seen)
    assert no_record == pytest.approx(first_step_losses(plain_runs, 0.0)[0], rel=1e-5)


def test_cached_loss_is_the_eager_loss_with_object_weight(cube_windows, chunk_dataset):
    model = _model().train()
    trainer = Trainer(model, cube_windows, _cfg("unused", 1, object_weight=W, object_radius=1))
    cache = trainer.build_cache()
    assert cache.object_pixels.shape == (len(cube_windows), 3, 3) and cache.frame_width.shape == (len(cube_windows),)
    index = step_indices(len(cache), 8, seed=0, step=1)
    cached = cache.batch(index)
    batch = default_collate([cube_windows[i] for i in index.tolist()])
    torch.testing.assert_close(cached.object_pixels, batch["object_pixels"][:, -3:])
    weights = trainer._object_weights(cached)
    torch.testing.assert_close(weights, model.object_weights(batch, W, 1, torch.device("cpu")), rtol=0, atol=0)
    assert (weights > 1).any()
    table = model.scheduler.alphas_cumprod.float().clone()
    for seed, alphas in ((1, None), (2, table)):
        torch.manual_seed(seed)
        expected = model.latent_loss(cached.latents, batch, W, 1)
        torch.manual_seed(seed)
        drop, noise, t = trainer._draw_noise(cached)
        got = trainer._cached_loss(cached.latents, cached.text_emb, cached.vectors, drop, noise, t, alphas, weights)
        torch.testing.assert_close(got, expected)
        plain = trainer._cached_loss(cached.latents, cached.text_emb, cached.vectors, drop, noise, t, alphas)
        assert not torch.allclose(got, plain)
    # data without a cube: no records are stored (the step's weights are None: the plain mean)
    plain = LatentCache.build(model, Subset(chunk_dataset, range(8)), "cpu")
    assert plain.object_pixels is None and trainer._object_weights(plain.batch(torch.arange(4))) is None


class _Prediction(nn.Module):
    """A stand-in UNet whose prediction is a parameter, to read the loss's gradient on each latent cell."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(shape))

    def forward(self, x, t, encoder_hidden_states=None):
        return types.SimpleNamespace(sample=self.p)


def test_weighting_reaches_the_cached_loss_and_its_gradient(cube_windows):
    """Error only on the cube cells: weighting must raise the loss and the gradient there; a map of ones (the
    weighting skipped) leaves both as they were."""
    model = _model().train()
    trainer = Trainer(model, cube_windows, _cfg("unused", 1, object_weight=W, object_radius=1))
    cached = trainer.build_cache().batch(torch.arange(8))
    mc = model.config
    cube = torch.from_numpy(_reference_map(cached.object_pixels.numpy(), 32, mc.latent_size, mc.new_frames, W, 1) > 1)
    assert cube.any()
    shape = (8, mc.latent_channels, mc.chunk_frames, mc.latent_size, mc.latent_size)
    zeros = torch.zeros(shape)  # latents and noise 0: the target is 0 and the error is the prediction itself
    t = torch.full((8,), 500)

    def loss_and_grad(weights):
        model.unet = _Prediction(shape)
        with torch.no_grad():
            model.unet.p[:, :, mc.context_frames:] = cube[:, None, None].float()
        loss = trainer._cached_loss(zeros, cached.text_emb, cached.vectors, None, zeros, t, None, weights)
        loss.backward()
        return loss.detach(), model.unet.p.grad[:, :, mc.context_frames:]

    plain, plain_grad = loss_and_grad(None)
    weighted, grad = loss_and_grad(trainer._object_weights(cached))
    assert weighted > 1.5 * plain
    on = cube[:, None, None].expand_as(grad)
    assert (grad[on] > 1.5 * plain_grad[on]).all() and (grad[~on] == 0).all()


def test_both_trainer_paths_pass_the_weights(tmp_path, cube_windows, monkeypatch):
    """One step of each slow path: the loss is computed with the cube weights, not silently without."""
    seen = []
    real = model_module.diffusion_loss
    monkeypatch.setattr(model_module, "diffusion_loss", lambda *a, **kw: seen.append(kw["weights"]) or real(*a, **kw))
    Trainer(_model(), cube_windows, _cfg(tmp_path / "eager", 1, latent_cache=False, object_weight=W)).fit(False)
    trainer = Trainer(_model(), cube_windows, _cfg(tmp_path / "cached", 1, object_weight=W))
    real_cached = trainer._cached_loss
    monkeypatch.setattr(trainer, "_cached_loss", lambda *a: seen.append(a[-1]) or real_cached(*a))
    trainer.fit(False)
    assert len(seen) == 2
    for weights in seen:
        assert weights is not None and weights.shape == (4, 1, 1, 8, 8) and set(weights.unique().tolist()) == {1, 1 + W}


def test_vae_phase_weighs_each_target_frame_by_its_own_cube_cells(cube_windows):
    """The vae phase's loss is the pixel-weighted mean with each target frame's latent-cell map (spread over the cell's
    pixels); weight 0 and windows without a record give the plain MSE exactly."""
    model = _model()
    batch = default_collate([cube_windows[i] for i in range(6)])
    size, cells, tn = model.config.frame_size, model.config.latent_size, model.config.new_frames
    factor = size // cells
    rows = batch["object_pixels"][:, -tn:].numpy()
    expected = _reference_map(rows.reshape(-1, 1, 3), 32, cells, 0, W, 1)
    expected = expected.repeat(factor, 1).repeat(factor, 2)  # (B * Tn, H, W)
    weights = model.frame_object_weights(batch, W, 1, torch.device("cpu"))
    assert weights.shape == (6 * tn, 1, size, size)
    np.testing.assert_array_equal(weights[:, 0].numpy(), expected)
    assert (weights > 1).any() and (weights == 1).any()

    def vae_loss(weight: float, b) -> torch.Tensor:
        trainer = Trainer(model, cube_windows, _cfg("unused", 1, phase="vae", latent_cache=False, object_weight=weight))
        torch.manual_seed(5)
        return trainer._vae_loss(b)

    x = batch["target"].flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    torch.manual_seed(5)
    posterior = model.vae.encode(x).latent_dist
    recon = model.vae.decode(posterior.sample()).sample.float()
    kl = TrainConfig().vae_kl_weight * posterior.kl().mean()
    w = torch.from_numpy(expected)[:, None].float()
    torch.testing.assert_close(vae_loss(W, batch), ((recon - x) ** 2 * w).sum() / (w.sum() * 3) + kl)
    plain = torch.nn.functional.mse_loss(recon, x) + kl
    old = {k: v for k, v in batch.items() if k not in ("object_pixels", "frame_width")}
    assert torch.equal(vae_loss(0.0, batch), vae_loss(W, old)) and torch.equal(vae_loss(0.0, batch), plain)
    assert not torch.allclose(vae_loss(W, batch), plain)


def test_revisit_chunks_are_the_cubes_return_after_a_hidden_context():
    # frames:              0  1  2  3  4  5  6  7
    visible = torch.tensor([[1, 1, 0, 0, 1, 1, 1, 1],    # seen, hidden through chunk 1's context, seen again
                            [1, 0, 1, 0, 1, 1, 1, 1],    # never hidden for a whole context
                            [0, 0, 0, 0, 1, 1, 1, 1],    # never seen before: a first visit, not a revisit
                            [1, 1, 0, 0, 0, 0, 0, 0]])   # hidden and never back
    got = [revisit_chunks(visible, start, 2, 2).tolist() for start in (0, 2, 4)]
    assert got == [[False] * 4, [True, False, False, False], [False] * 4]
    with pytest.raises(ValueError, match="revisit_chunks"):
        revisit_chunks(visible, 6, 2, 2)  # the chunk runs past the record


def test_slow_fast_weighs_a_revisit_chunk_by_revisit_weight(synthetic_episodes, tmp_path):
    """Episode 0's cube is hidden in chunk 1's context and back in its new frames, episode 1's in chunk 2's: the
    outer loss of exactly those chunks, for exactly those episodes, counts 1 + revisit_weight times."""
    cube = _with_cube(synthetic_episodes, 2)
    num_chunks = (len(cube[0]["frames"]) - 2) // 2  # one run per episode, ending at its last frame
    offset = len(cube[0]["frames"]) - (2 + 2 * num_chunks)
    for e, hidden in ((0, [2, 3]), (1, [2, 3, 4, 5])):  # run rows; chunk c: context 2c, 2c+1; new 2c+2, 2c+3
        record = cube[e]["cube_pixel"].copy()
        record[:, 3] = 1.0
        record[[offset + r for r in hidden], 3] = 0.0
        cube[e] = {**cube[e], "cube_pixel": record}
    runs, R = EpisodeDataset(cube, 2, 2, num_chunks=num_chunks), 7.0
    assert len(runs) == 2
    revisit_at = {2: 1, 4: 2}  # hidden rows in the run -> the chunk that brings the cube back

    def first_step(weight):
        trainer = Trainer(_model(), runs, TrainConfig(phase="slow_fast", steps=1, batch_size=2, lr=1e-3,
                                                      out_dir=str(tmp_path / f"{weight}"), revisit_weight=weight))
        seen, latent_loss = [], trainer.model.latent_loss

        def spy(latents, batch, object_weight=0.0, object_radius=1, sample_weights=None):
            seen.append(None if sample_weights is None else sample_weights.tolist())
            return latent_loss(latents, batch, object_weight, object_radius, sample_weights)

        trainer.model.latent_loss = spy
        trainer.model.train()
        torch.manual_seed(1)
        batch = next(iter(trainer._loader()))
        order = [revisit_at[int((v == 0).sum())] for v in batch["object_pixels"][..., 2]]  # each row's revisit chunk
        expected = [[1 + weight if order[e] == c else 1.0 for e in range(2)] for c in range(num_chunks)]
        return trainer._slow_fast_episode(batch), seen, expected

    plain, seen, _ = first_step(0.0)
    assert seen == [None] * num_chunks
    weighted, seen, expected = first_step(R)
    assert seen == expected and sum(w == 1 + R for row in seen for w in row) == 2
    assert weighted != pytest.approx(plain, rel=1e-4)
    # the weights make a weighted mean of the episodes' losses (the same noise draws each time)
    model, batch = _model().train(), default_collate([ChunkDataset(cube[:1], 2, 2)[0]] * 2)
    latents = model.batch_latents(batch)

    def loss(weights):
        torch.manual_seed(4)
        return model.latent_loss(latents, batch, sample_weights=None if weights is None else torch.tensor(weights))

    first, second = loss([2.0, 0.0]), loss([0.0, 2.0])  # each window's own loss
    assert not torch.allclose(first, second)
    torch.testing.assert_close(loss([1.0, 1.0]), loss(None))
    torch.testing.assert_close(loss([1 + R, 1.0]), ((1 + R) * first + second) / 2)  # the reopen counts as 1 + R
    with pytest.raises(ValueError, match="sample_weights"):
        model.latent_loss(latents, batch, sample_weights=torch.ones(3))
    with pytest.raises(ValueError, match="revisit_weight"):
        TrainConfig(phase="slow_fast", steps=1, batch_size=2, lr=1e-3, out_dir=str(tmp_path), revisit_weight=-1)

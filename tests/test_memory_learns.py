"""Temp-LoRA must store what it is shown: tests that fail when the memory breaks.

Each test names the mutation it guards against: a fast update that never steps, a batched Adam step
that never writes Θ, a Θ that is never applied at sampling, and per-step copies in the history; then
the fast update's rule (draws, rehearsal, sampler timesteps, rollback at the expected loss). The
slow-fast phase's 'Θ untouched by the outer step' is tests/test_train.py's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from worldmodel import BatchedTempLoRA, Chunk, Imagination, TempLoRA
from worldmodel.config import TempLoRAConfig
from worldmodel.diffusion import diffusion_loss
from worldmodel.memory import rule
from worldmodel.memory.rule import draw_loss_noise

FAST_LORA = dict(rank=2, alpha=4.0, lr=1e-2)


@pytest.fixture(scope="module")
def model(micro_model):
    return micro_model(temp_lora=FAST_LORA)


def _chunk(n: int = 1, seed: int = 0) -> Chunk:
    g = torch.Generator().manual_seed(seed)
    return Chunk(torch.zeros(n, 2, 16, 16, 3, dtype=torch.uint8), torch.randn(n, 4, 4, 8, 8, generator=g), 2)


def _probe_loss(model, chunk: Chunk, draws: int = 8) -> float:
    """The fast objective on fixed (noise, t) draws: what Θ should lower on a chunk it learned."""
    g = torch.Generator().manual_seed(123)
    given = torch.zeros(1, 4, dtype=torch.bool)
    given[:, :2] = True
    null = model.action_encoder.null(1)
    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            noise, t = draw_loss_noise(chunk.latents.shape[1:], g, model.scheduler.config.num_train_timesteps)
            total += float(diffusion_loss(model.unet, model.scheduler, chunk.latents[:1], given, null, noise[None], t))
    return total / draws


def test_peft_fast_updates_lower_the_loss_on_a_repeated_chunk(micro_model):
    """Guards: TempLoRA.update never stepping (Θ would stay 0 and the loss flat)."""
    model = micro_model(temp_lora=FAST_LORA)
    memory = TempLoRA(model, dataclasses.replace(model.config.temp_lora, merge_for_inference=False))
    chunk = _chunk()
    before = _probe_loss(model, chunk)
    torch.manual_seed(0)
    for _ in range(12):
        [update] = memory.update(chunk)
        assert update.steps == 1 and not update.rolled_back
    after = _probe_loss(model, chunk)
    assert after < 0.95 * before, (before, after)  # a never-stepping update leaves it equal
    memory.set_enabled(False)
    assert _probe_loss(model, chunk) == pytest.approx(before)  # Θ off: Φ exactly


def _saved_bytes_of_an_update(memory, chunk: Chunk, frozen: set) -> int:
    """Bytes autograd saves for the backward of `memory.update(chunk)`, not counting weights (storages in `frozen`)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in frozen:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        memory.update(chunk)
    return sum(storages.values())


@pytest.mark.parametrize("kind", ["peft", "batched"])
def test_a_fast_step_keeps_nothing_for_phis_gradient(kind, micro_model):
    """Guards: Φ left trainable through a fast step (`rule.phi_frozen` not applied). A fast step differentiates Θ
    alone; with Φ trainable, as a trainer leaves it and as the env found it, autograd kept every activation Φ's
    weight gradients would need (down blocks included): twice the memory for a gradient nobody reads. So with Φ
    trainable an update saves as much as with Φ frozen by hand, writes the same Θ, and leaves Φ trainable and
    without gradients."""
    def run(phi_trainable: bool):
        model = micro_model(temp_lora=FAST_LORA)
        model.unet.requires_grad_(phi_trainable)
        torch.manual_seed(0)
        memory = TempLoRA(model) if kind == "peft" else BatchedTempLoRA(model, 1)
        phi = [p for n, p in model.unet.named_parameters() if "lora_" not in n]
        saved = _saved_bytes_of_an_update(memory, _chunk(), {p.untyped_storage().data_ptr() for p in phi})
        assert all(p.requires_grad == phi_trainable and p.grad is None for p in phi)
        theta = torch.cat([p.detach().flatten() for p in memory.params]) if kind == "peft" else memory.theta
        return saved, theta

    saved_trainable, theta_trainable = run(True)
    saved_frozen, theta_frozen = run(False)
    assert saved_frozen > 0 and theta_frozen.abs().max() > 0
    assert saved_trainable == saved_frozen
    assert torch.equal(theta_trainable, theta_frozen)


def test_batched_fast_updates_write_theta_and_lower_the_loss(model):
    """Guards: the batched Adam step never writing Θ (env 0 learns; env 1, never updated, stays Φ)."""
    memory = BatchedTempLoRA(model, 2)
    memory.reset(generators=[torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)])
    chunk = _chunk()
    with memory.applied([0]):
        before = _probe_loss(model, chunk)
    start = memory.theta.detach().clone()
    for _ in range(12):
        [update] = memory.update(chunk, ids=[0], generators=[torch.Generator().manual_seed(2)])
        assert update.steps == 1 and not update.rolled_back
    assert not torch.equal(memory.theta[0], start[0]) and torch.equal(memory.theta[1], start[1])
    with memory.applied([0]):
        after = _probe_loss(model, chunk)
    assert after < 0.95 * before, (before, after)  # a never-stepping update leaves it equal


def test_theta_is_applied_when_sampling(model):
    """Guards: a memory whose Θ is never applied in the denoiser (learned, yet the video is Φ's)."""
    start = np.random.default_rng(0).integers(0, 256, (2, 1, 16, 16, 3), dtype=np.uint8)
    start[1] = start[0]
    core = Imagination(model, 2, BatchedTempLoRA(model, 2), denoise_steps=2)
    core.reset(None, start, seeds=[3, 3])  # two identical episodes
    for _ in range(4):  # only env 0's Θ learns (from a chunk of its own)
        core.memory.update(_chunk(seed=4), ids=[0], generators=[torch.Generator().manual_seed(5)])
    action = {"text": ["stay"] * 2, "vector": torch.zeros(2, 2, 5)}
    chunk = core.step(None, action, learn=False)
    assert not torch.equal(chunk.frames[0], chunk.frames[1]), "Θ of env 0 did not change its video"
    core.memory.set_enabled(False)
    core.reset(None, start, seeds=[3, 3], forget=False)
    plain = core.step(None, action, learn=False)
    assert torch.equal(plain.frames[0], plain.frames[1])  # without Θ the two episodes are the same


@pytest.mark.parametrize("memory_kind", ["peft", "batched"])
def test_history_holds_each_chunk_once(micro_model, memory_kind):
    """Guards: the full_sequence history gaining a copy of the chunk per fast step (3 chunks x 5 steps
    must give 3 entries, not 15)."""
    model = micro_model(temp_lora=dict(FAST_LORA, variant="full_sequence", steps=5, max_history=16))
    memory = TempLoRA(model) if memory_kind == "peft" else BatchedTempLoRA(model, 1)
    for seed in range(3):
        memory.update(_chunk(seed=seed), **({} if memory_kind == "peft" else {"generators": [None]}))
    history = memory.history if memory_kind == "peft" else memory.history[0]
    assert len(history) == 3


@pytest.mark.parametrize("memory_kind", ["peft", "batched"])
def test_update_every_learns_every_kth_chunk_and_remembers_the_rest(micro_model, memory_kind):
    """update_every=2: Θ stays put on chunks 1 and 3 and moves on chunks 2 and 4; every chunk enters the history
    (guards: the skip never firing, or a skipped chunk left out of the history)."""
    model = micro_model(temp_lora=dict(FAST_LORA, variant="full_sequence", update_every=2, max_history=16))
    memory = TempLoRA(model) if memory_kind == "peft" else BatchedTempLoRA(model, 1)
    theta = (lambda: _theta_of(memory)) if memory_kind == "peft" else (lambda: memory.theta[0].clone())
    moved = []
    for seed in range(4):
        before = theta()
        with torch.enable_grad():
            [update] = memory.update(_chunk(seed=seed), **({} if memory_kind == "peft" else {"generators": [None]}))
        moved.append(not torch.equal(before, theta()))
        assert (update.steps == 0) == (seed % 2 == 0)
    assert moved == [False, True, False, True]
    history = memory.history if memory_kind == "peft" else memory.history[0]
    assert len(history) == 4


def _theta_of(peft_memory: TempLoRA) -> torch.Tensor:
    return torch.cat([torch.cat([layer.lora_A["temp_lora"].weight.t().flatten(),
                                 layer.lora_B["temp_lora"].weight.t().flatten()]) for layer in peft_memory.layers])


@pytest.mark.parametrize("reverse", [False, True, "phases", "backward"])
def test_batched_matches_peft_with_draws_and_rehearsal(micro_model, reverse):
    """Several (t, noise) draws per step, rehearsal rows over the history, and (`reverse`) the chunk played
    backwards (``phases``: also the windows at the frame phases before it; ``backward``: backwards alone): the batched
    memory (its rows laid out block-major in one forward) still takes the peft memory's steps."""
    phases = 3 if reverse == "phases" else 0
    model = micro_model(temp_lora=dict(FAST_LORA, lr=1e-3, draws=3, rehearsal=2, steps=2, reverse=bool(reverse),
                                       reverse_phases=phases, forward=reverse != "backward"))
    peft_memory, memory = TempLoRA(model), BatchedTempLoRA(model, 2)
    for k, layer in enumerate(peft_memory.layers):
        memory.set_factors(1, k, layer.lora_A["temp_lora"].weight.t(), layer.lora_B["temp_lora"].weight.t())
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(7)]
    torch.manual_seed(7)
    chunks = [_chunk(seed=s) for s in range(3)]
    ref, ours = [], []
    for c in chunks:
        with torch.enable_grad():
            ref += peft_memory.update(c)
        peft_memory.set_enabled(False)
        both = Chunk(torch.zeros(2, 2, 16, 16, 3, dtype=torch.uint8), torch.cat([_chunk(seed=9).latents, c.latents]), 2)
        ours.append(memory.update(both, generators=gens)[1])
        peft_memory.set_enabled(True)
    assert len(peft_memory.history) == 3 and len(memory.history[1]) == 3  # rehearsal keeps the episode
    assert [u.loss for u in ours] == pytest.approx([u.loss for u in ref], rel=1e-4)
    theta = torch.cat([torch.cat([f.flatten() for f in memory.factors(1, k)]) for k in range(len(memory.layout))])
    diff = (theta - _theta_of(peft_memory)).abs()
    assert diff.max() < 0.1 * 1e-3 * 6 and (diff < 1e-6).float().mean() > 0.95, (diff.max(), (diff < 1e-6).float().mean())


def test_fast_batch_draws_sampler_timesteps_and_rehearses(model):
    """t only from the sampler's timesteps; draws + rehearsal rows; rehearsal windows come from the history
    once it holds one, extra draws on the chunk before."""
    cfg = dataclasses.replace(model.config.temp_lora, draws=3, rehearsal=2)
    ts = rule.fast_timesteps(cfg, model)
    assert len(ts) == model.config.sample_steps and int(ts.min()) > 0
    chunk, g = _chunk(seed=1), torch.Generator().manual_seed(0)
    latents, noise, t = rule.fast_batch(cfg, chunk, [], g, ts)
    assert latents.shape[0] == noise.shape[0] == t.shape[0] == 5 and set(t.tolist()) <= set(ts.tolist())
    assert all(torch.equal(row, chunk.latents[0]) for row in latents)
    history = [torch.full((1, 4, 2, 8, 8), float(k)) for k in range(3)]
    latents, _, _ = rule.fast_batch(cfg, chunk, history, g, ts)
    assert all(torch.equal(row, chunk.latents[0]) for row in latents[:3])
    assert all(set(row.unique().tolist()) <= {0.0, 1.0, 2.0} for row in latents[3:])  # windows over the history
    g.manual_seed(5)
    forward_rows = rule.fast_batch(cfg, chunk, history, g, ts)[0]
    g.manual_seed(5)
    both = rule.fast_batch(dataclasses.replace(cfg, reverse=True), chunk, history, g, ts)[0]
    assert both.shape[0] == 10 and torch.equal(both[:5], forward_rows)  # the same windows drawn first
    assert torch.equal(both[5:], forward_rows.flip(2))  # every row played backwards, rehearsed windows too
    g.manual_seed(5)
    backward = rule.fast_batch(dataclasses.replace(cfg, reverse=True, forward=False), chunk, history, g, ts)[0]
    assert torch.equal(backward, forward_rows.flip(2))  # forward=False: those alone
    with pytest.raises(ValueError, match="forward=False"):
        dataclasses.replace(cfg, forward=False)
    assert not torch.equal(forward_rows[3], forward_rows[3].flip(1))  # a window that a flip changes
    uniform = rule.fast_timesteps(dataclasses.replace(cfg, timesteps="uniform"), model)
    assert len(uniform) == model.scheduler.config.num_train_timesteps
    passes = model.config.sample_steps + 3  # a distilled model's fast steps on its teacher's passes
    teachers = rule.fast_timesteps(dataclasses.replace(cfg, timesteps=passes), model)
    assert len(teachers) == passes and set(ts.tolist()) != set(teachers.tolist())
    for bad in (0, True, "teacher"):
        with pytest.raises(ValueError, match="unknown Temp-LoRA timesteps"):
            dataclasses.replace(cfg, timesteps=bad)



def test_phase_windows_play_the_frames_before_the_chunk_backwards(model):
    """`reverse_phases` rows: the windows ending 1, 2, ... frames before the chunk's end over the history and the
    chunk (the context not repeated), played backwards; one that does not fit is the chunk backwards. Guards: no
    phase rows, the context counted twice, windows played forwards."""
    cfg = dataclasses.replace(model.config.temp_lora, draws=1, rehearsal=0, reverse=True, reverse_phases=3)
    ts = rule.fast_timesteps(cfg, model)

    def frames(*values):  # latents (1, 4, F, 8, 8) whose frame f is filled with values[f]
        return torch.stack([torch.full((1, 4, 8, 8), float(v)) for v in values], dim=2)

    history = [frames(0, 1), frames(2, 3)]  # the new latents of the two chunks before
    chunk = Chunk(torch.zeros(1, 2, 16, 16, 3, dtype=torch.uint8), torch.cat([frames(2, 3), frames(4, 5)], 2), 2)
    latents = rule.fast_batch(cfg, chunk, history, torch.Generator().manual_seed(0), ts)[0]
    shown = [row[0, :, 0, 0].tolist() for row in latents]
    assert shown == [[2, 3, 4, 5], [5, 4, 3, 2], [4, 3, 2, 1], [3, 2, 1, 0], [5, 4, 3, 2]]
    alone = rule.fast_batch(cfg, chunk, [], torch.Generator().manual_seed(0), ts)[0]  # no history: the chunk again
    assert [row[0, :, 0, 0].tolist() for row in alone] == [[2, 3, 4, 5]] + [[5, 4, 3, 2]] * 4
    assert rule.keeps_history(cfg) and not rule.keeps_history(dataclasses.replace(cfg, reverse_phases=0))
    with pytest.raises(ValueError, match="reverse_phases"):
        dataclasses.replace(cfg, reverse=False)


def test_reverse_also_learns_the_chunk_played_backwards(micro_model):
    """`reverse` adds `draws` rows of the training sequence in reverse frame order, and Θ then stores the chunk
    backwards too: the reopen that shows the cube is the drawer's closing over it, reversed. Guards: rows that are
    not flipped (the reversed chunk's loss would fall no more than forward learning makes it)."""
    model = micro_model(temp_lora=dict(FAST_LORA, draws=2))
    chunk, g = _chunk(seed=3), torch.Generator().manual_seed(0)
    ts = rule.fast_timesteps(model.config.temp_lora, model)
    forward_rows = rule.fast_batch(model.config.temp_lora, chunk, [], g, ts)[0]
    cfg = dataclasses.replace(model.config.temp_lora, reverse=True)
    latents, noise, t = rule.fast_batch(cfg, chunk, [], g, ts)
    assert forward_rows.shape[0] == 2 and latents.shape[0] == noise.shape[0] == t.shape[0] == 4
    assert all(torch.equal(row, chunk.latents[0]) for row in latents[:2])
    assert all(torch.equal(row, chunk.latents[0].flip(1)) for row in latents[2:])
    backwards = Chunk(chunk.frames, chunk.latents.flip(2), 2)
    before, after = _probe_loss(model, backwards), {}
    for reverse in (False, True):  # the same seeded Φ, a fresh Θ each
        fresh = micro_model(temp_lora=dict(FAST_LORA, draws=2, reverse=reverse, merge_for_inference=False))
        assert _probe_loss(fresh, backwards) == pytest.approx(before)
        memory = TempLoRA(fresh)
        torch.manual_seed(0)
        for _ in range(20):
            memory.update(chunk)
        after[reverse] = _probe_loss(fresh, backwards)
    # measured: 1.111 before, 1.051 after forward learning alone, 1.003 with reverse
    assert after[True] < 0.95 * before and after[True] < after[False] - 0.02, (before, after)


def test_rollback_compares_with_the_expected_loss_at_that_timestep():
    """A normal loss at a small t (10x the median over all t, as v-prediction gives) must not roll back;
    the old pooled-median rule rolled it back. An outlier at its own t, or a NaN, does."""
    cfg = TempLoRAConfig()
    losses = rule.RecentLosses()
    for _ in range(4):
        for t, v in [(999, 0.05), (874, 0.06), (749, 0.08), (124, 1.0)]:
            losses.add(t, v)
    small_t = torch.tensor([124])
    assert not rule.rolls_back(cfg, losses, small_t, torch.tensor([1.2]))
    assert rule.rolls_back(dataclasses.replace(cfg, rollback="median"), losses, small_t, torch.tensor([1.2]))
    assert rule.rolls_back(cfg, losses, torch.tensor([999]), torch.tensor([1.2]))  # 24x the loss at t=999
    assert rule.rolls_back(cfg, losses, small_t, torch.tensor([float("nan")]))
    assert not rule.rolls_back(dataclasses.replace(cfg, rollback="finite"), losses, small_t, torch.tensor([1e9]))
    fresh = rule.RecentLosses()  # nothing at this t yet: bounded by the largest recent loss at any t
    for v in (0.1, 0.2, 0.3):
        fresh.add(500, v)
    assert not rule.rolls_back(cfg, fresh, small_t, torch.tensor([2.5])) and rule.rolls_back(cfg, fresh, small_t,
                                                                                               torch.tensor([4.0]))


def test_fast_update_measure_reports_what_each_setting_stores(model):
    """experiments.fast_update's measurement: a setting that learns lowers the loss on the chunk it
    learned; Θ in the up blocks only, on fewer layer kinds or at a lower rank has fewer parameters and still stores."""
    from worldmodel.memory.measure import Setting, markdown, measure

    assert Setting.parse("1e-3,1,4") == Setting(1e-3, 1, 4, 0, ())
    assert Setting.parse("1e-3,2,2,1,up_blocks+mid_block").blocks == ("up_blocks", "mid_block")
    assert Setting.parse("3e-3,4,1,0,up_blocks,reverse,phases=3") == Setting(3e-3, 4, 1, 0, ("up_blocks",), True, 3)
    assert Setting.parse("5e-4,1,1,0,up_blocks,targets=to_q+to_k,rank=4") == Setting(
        5e-4, 1, 1, 0, ("up_blocks",), targets=("to_q", "to_k"), rank=4)
    assert Setting.parse("1e-3,4,1,timesteps=8").timesteps == 8
    assert Setting.parse("1e-3,4,1,reverse,timesteps=uniform") == Setting(1e-3, 4, 1, reverse=True, timesteps="uniform")
    assert Setting.parse("3e-3,4,4,0,up_blocks,reverse,events,top=2,slots=4,replay") == Setting(
        3e-3, 4, 4, 0, ("up_blocks",), True, write="events", event_top=2, event_slots=4, replay=True)
    assert Setting.parse("3e-3,4,4,events,top=2,slots=4,alone").slots_alone
    assert Setting.parse("3e-3,4,4,events,top=2,change=pixels").event_change == "pixels"
    with pytest.raises(ValueError, match="lr,steps,draws"):
        Setting.parse("1e-3")
    learned = [[_chunk(1, seed) for seed in range(2)]]
    others = [_chunk(1, 10)]
    result = measure(model, learned, others, [Setting(1e-2, 3, 2), Setting(1e-2, 3, 2, 0, ("up_blocks",)),
                                              Setting(1e-2, 0, 1), Setting(1e-2, 3, 2, 0, (), True, 1),
                                              Setting(1e-2, 3, 2, targets=("to_v", "to_out.0"), rank=4),
                                              Setting(1e-2, 3, 2, timesteps="uniform"),
                                              Setting(1e-2, 3, 2, write="events", event_top=2, event_slots=2,
                                                      replay=True, slots_alone=True, event_change="pixels")],
                     log=lambda row: None)
    full, up, none, back, lean, uniform, events = result["rows"]
    # the event rule is the memory's: its gate takes no chunk before the fourth, so two chunks write nothing
    assert (events["write"], events["event_top"], events["event_slots"], events["replay"], events["slots_alone"],
            events["event_change"]) == ("events", 2, 2, True, True, "pixels")
    assert events["episode"] == pytest.approx(0.0, abs=1e-6) and events["other"] == pytest.approx(0.0, abs=1e-6)
    assert uniform["timesteps"] == "uniform" != full["timesteps"] and uniform["episode"] != full["episode"]
    assert back["reverse"] and back["reverse_phases"] == 1 and back["episode"] != full["episode"]  # the rule is used
    assert full["chunk"] < -0.01 and up["chunk"] < -0.01  # each stores what it is shown
    assert none["chunk"] == pytest.approx(0.0, abs=1e-6) and none["episode"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < up["theta_parameters"] < full["theta_parameters"] and up["blocks"] == "up_blocks"
    assert lean["chunk"] < -0.01 and (lean["targets"], lean["rank"]) == ("to_v+to_out.0", 4)
    assert 0 < lean["theta_parameters"] < full["theta_parameters"] // 2 and full["rank"] == model.config.temp_lora.rank
    assert all(r["update_cpu_s"] >= 0 for r in result["rows"])
    assert "later" not in full and "later" not in markdown(result)


def test_fast_update_measure_scores_the_episodes_later_chunks_after_its_updates(model):
    """`measure`'s ``later`` chunks are scored with the episode's Θ once its updates are in: a later chunk that repeats
    a learned one gets easier, and a setting that learns nothing leaves them as Φ has them. Guards: the later chunks
    scored before the updates (or with Φ), the column missing from the report."""
    from worldmodel.memory.measure import Setting, markdown, measure

    learned = [[_chunk(1, seed) for seed in range(2)]]
    later = [[_chunk(1, 1), _chunk(1, 20)]]  # the last learned chunk again, then one never seen
    result = measure(model, learned, [_chunk(1, 10)], [Setting(1e-2, 3, 2), Setting(1e-2, 0, 1)],
                     log=lambda row: None, later=later)
    learns, none = result["rows"]
    assert learns["later"] < -0.01 and learns["later_max"] >= learns["later"]
    assert none["later"] == pytest.approx(0.0, abs=1e-6)
    assert "later chunks" in markdown(result)


def _scene_chunk(latent: float, change: float, seed: int = 0) -> Chunk:
    """A micro chunk whose new frames differ from the frame before them by ``change`` (each chunk's frames are a flat
    grey level, so a chunk at level ``x`` after one at ``y`` changes by |x - y|) and whose latents are filled with
    ``latent`` (frame f holds latent + f), to tell the windows apart."""
    frames = torch.full((1, 2, 16, 16, 3), int(change), dtype=torch.uint8)
    latents = torch.stack([torch.full((1, 4, 8, 8), latent + f) for f in range(4)], dim=2)
    return Chunk(frames, latents, 2)


def _event_sequences(config, log, chunk):
    """`rule.event_writes` without the slots: the sequences alone."""
    return [sequence for _, sequence in rule.event_writes(config, log, chunk)]


def test_event_gate_writes_the_windows_around_a_change_once_the_next_chunk_is_in():
    """``write="events"``: chunk c >= 3 is an event when its change from the frame before it exceeds event_gate x the
    mean change of chunks 1 .. c - 1; its latents and the next chunk's new ones are written, at every frame offset,
    once the next chunk is in; with replay the earlier events follow. Guards: the mean taken over the whole episode or
    including the chunk itself, a gate that is not strict, a decision before chunk 3, the window written before the
    next chunk is in, replay missing or in the wrong order."""
    cfg = TempLoRAConfig(write="events", replay=True, event_gate=1.5)
    log = rule.EventLog()
    levels = [0, 10, 20, 30, 70, 80, 90, 105, 115, 160]  # chunk changes from chunk 1: 10 10 10 40 10 10 15 10 45
    seen = []
    for c, level in enumerate(levels):
        seen.append(_event_sequences(cfg, log, _scene_chunk(100.0 * c, level)))
    # chunk 4 changes 40 > 1.5 x 10: an event, written at chunk 5; chunk 7's 15 < 1.5 x mean(10 10 10 40 10 10) but
    # > 1.5 x 10 (a mean that left the event out); chunk 9 changes 45 > 1.5 x mean(10 10 10 40 10 10 15 10) = 21.6: an
    # event (whose next chunk is not in yet)
    assert [len(s) for s in seen] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    (sequence,) = seen[5]
    assert sequence[0, 0, :, 0, 0].tolist() == [400, 401, 402, 403, 502, 503]  # chunk 4 (context + new), chunk 5's new
    windows = rule.event_windows(sequence, 4)
    assert [w[0, 0, :, 0, 0].tolist() for w in windows] == [[400, 401, 402, 403], [401, 402, 403, 502],
                                                              [402, 403, 502, 503]]
    later = _event_sequences(cfg, log, _scene_chunk(1000.0, 165))  # chunk 10 completes chunk 9's event
    assert [s[0, 0, 0, 0, 0].item() for s in later] == [900, 400]  # the new event, then the earlier one replayed
    assert len(_event_sequences(dataclasses.replace(cfg, replay=False), rule.EventLog(), _scene_chunk(0, 0))) == 0
    early = rule.EventLog()  # a large change at chunk 2 is not judged (too few chunks before it)
    assert [len(_event_sequences(cfg, early, _scene_chunk(c, lv))) for c, lv in enumerate([0, 1, 200, 201])] == [0] * 4
    strict = rule.EventLog()  # chunk 4 changes 15 = 1.5 x 10 exactly: not an event
    assert [len(_event_sequences(cfg, strict, _scene_chunk(c, lv)))
            for c, lv in enumerate([0, 10, 20, 30, 45, 46])] == [0] * 6 and strict.pending is None
    own = rule.EventLog()  # chunk 4 changes 17 > 1.5 x 10, not > 1.5 x the mean with itself (11.75): an event
    assert [len(_event_sequences(cfg, own, _scene_chunk(c, lv)))
            for c, lv in enumerate([0, 10, 20, 30, 47, 48])] == [0] * 5 + [1]
    top = dataclasses.replace(cfg, event_top=2, replay=False)  # ranked: among the 2 largest so far (ties count)
    ranked = rule.EventLog()
    assert [len(_event_sequences(top, ranked, _scene_chunk(100.0 * c, lv)))
            for c, lv in enumerate([0, 30, 50, 60, 80, 81, 86, 116, 117])] == [0, 0, 0, 0, 0, 1, 0, 0, 1]
    # chunks 1.. change 30 20 10 20 1 5 30 1: chunk 3 (10) has two larger before it; chunk 4 (20) ties the second
    # largest, an event written at chunk 5; chunk 7 (30) ties the largest, written at chunk 8
    assert not rule.is_event([5.0, 6.0], 4.0, 1.5, 2) and rule.is_event([5.0, 6.0], 5.0, 1.5, 2)
    copy = log.copy()
    _event_sequences(cfg, log, _scene_chunk(0.0, 0))
    assert copy.chunks == log.chunks - 1 and len(copy.changes) == len(log.changes) - 1  # a fork's log is its own


def _patched_chunk(frame: torch.Tensor, latent: float) -> Chunk:
    """A micro chunk whose two new frames are ``frame`` (16, 16, 3 uint8), its latents filled with ``latent``."""
    return Chunk(frame.expand(1, 2, 16, 16, 3).clone(), torch.full((1, 4, 4, 8, 8), latent), 2)


def test_event_change_pixels_ranks_the_share_of_pixels_changed_a_lot():
    """``event_change="pixels"``: a chunk's change is the share of pixels whose largest channel moved by more than
    `rule.PIXEL_CHANGE`, so a chunk that moves a few pixels a lot (a drawer over a cube) outranks one that moves all of
    them a little (the arm's shading), where the mean ranks them the other way. Guards: the measure ignored (the
    memory's gate always the mean), the threshold not strict, the channels averaged instead of their largest taken."""
    flat = torch.zeros(16, 16, 3, dtype=torch.uint8)
    little = flat + 30  # every pixel +30 in every channel: mean 30, no pixel changed by more than 48
    patch = flat.clone()
    patch[:4, :8, 0] = 120  # 32 of 256 pixels, one channel +120 (40 over the channels): mean 5, share 0.125
    edge = flat.clone()
    edge[:, :, 1] = rule.PIXEL_CHANGE  # every pixel moved by exactly the threshold: not changed
    assert rule.chunk_change(little[None], flat) == pytest.approx(30.0)
    assert rule.chunk_change(little[None], flat, "pixels") == 0.0
    assert rule.chunk_change(patch[None], flat, "pixels") == pytest.approx(32 / 256)
    assert rule.chunk_change(patch[None], flat) == pytest.approx(120 * 32 / 768)
    assert rule.chunk_change(edge[None], flat, "pixels") == 0.0
    # frames flat, little, flat, patch, flat, little, flat: the changes (from chunk 1) little, little, patch, patch,
    # little, little; ranked among the 2 largest so far, the patches (chunks 3, 4) are events under "pixels", the
    # later littles (chunks 5, 6) under "mean"
    frames = [flat, little, flat, patch, flat, little, flat]
    written = {}
    for measure in ("mean", "pixels"):
        cfg = TempLoRAConfig(write="events", event_top=2, event_change=measure)
        log = rule.EventLog()
        written[measure] = [len(_event_sequences(cfg, log, _patched_chunk(f, 100.0 * c))) for c, f in enumerate(frames)]
    assert written["pixels"] == [0, 0, 0, 0, 1, 1, 0]  # chunk 3 written once chunk 4 is in, chunk 4 at chunk 5
    assert written["mean"] == [0, 0, 0, 0, 0, 0, 1]  # the patches' 5 below the 30s before; chunk 5's 30 ties them
    with pytest.raises(ValueError, match="event_change"):
        TempLoRAConfig(write="events", event_change="max")


def _two_event_chunks() -> list[Chunk]:
    """Nine micro chunks whose changes make chunks 4 and 7 the events of the default ratio gate (1.3), each with latents
    of its own."""
    chunks = []
    for c, level in enumerate([0, 10, 20, 30, 80, 90, 100, 160, 170]):
        chunk = _scene_chunk(0.0, level)
        chunk.latents = _chunk(seed=c).latents
        chunks.append(chunk)
    return chunks


@pytest.mark.parametrize("replay, alone", [(False, False), (True, False), (False, True), (True, True)])
def test_event_slots_leave_an_earlier_event_as_it_was_and_match_peft(micro_model, replay, alone):
    """``event_slots``: the k-th event writes slot k mod S of Θ's rank alone, so the second event's write leaves the
    first one's weights exactly as they were (a replayed event writes its own slot again); the batched memory takes the
    peft memory's steps, with ``slots_alone`` too (the other slots off in a write's forward, back after it). Guards:
    the gradient or Adam's step not masked (momentum moves the other slot), slots in the wrong order, a replayed event
    written into the new event's slot, ``slots_alone`` honoured by one memory only or not giving the slots back."""
    model = micro_model(temp_lora=dict(FAST_LORA, lr=1e-3, draws=2, steps=2, write="events", event_slots=2,
                                       replay=replay, slots_alone=alone))
    peft_memory, memory = TempLoRA(model), BatchedTempLoRA(model, 1)
    for k, layer in enumerate(peft_memory.layers):
        memory.set_factors(0, k, layer.lora_A["temp_lora"].weight.t(), layer.lora_B["temp_lora"].weight.t())
    gens = [torch.Generator().manual_seed(3)]
    torch.manual_seed(3)
    layers = range(len(memory.layout))

    def slot(k: int) -> torch.Tensor:  # slot k's factors: A's column k, B's row k (rank 2, two slots of rank 1)
        return torch.cat([torch.cat([memory.factors(0, i)[0][:, k], memory.factors(0, i)[1][k]]) for i in layers])

    start = [slot(0), slot(1)]
    seen = {}
    for c, chunk in enumerate(_two_event_chunks()):
        with torch.enable_grad():
            peft_memory.update(chunk)
        peft_memory.set_enabled(False)
        memory.update(chunk, generators=gens)
        peft_memory.set_enabled(True)
        seen[c] = [slot(0), slot(1)]
    assert not torch.equal(seen[5][0], start[0]) and torch.equal(seen[5][1], start[1])  # the first event: slot 0
    assert not torch.equal(seen[8][1], start[1])  # the second: slot 1
    assert torch.equal(seen[8][0], seen[5][0]) != replay  # ... and slot 0 only where the first is replayed
    theta = torch.cat([torch.cat([f.flatten() for f in memory.factors(0, k)]) for k in layers])
    diff = (theta - _theta_of(peft_memory)).abs()
    assert diff.max() < 1e-5, diff.max()
    assert memory.events[0].count == 2 and len(memory.events[0].written) == (2 if replay else 0)


def test_slots_alone_writes_a_later_event_without_the_earlier_slots(micro_model):
    """``slots_alone``: the first event's write is the same either way (the second slot is still zero: B = 0 at
    init), the second event's differs, since its forward no longer sees the first slot; both slots stay written.
    Guards: the flag ignored, the other slots left off after the write."""
    written = {}
    for alone in (False, True):
        model = micro_model(temp_lora=dict(FAST_LORA, lr=1e-3, draws=2, steps=2, write="events", event_slots=2,
                                           slots_alone=alone))
        torch.manual_seed(3)  # the same A at init
        memory = BatchedTempLoRA(model, 1)
        gens = [torch.Generator().manual_seed(3)]
        theta = []
        for chunk in _two_event_chunks():
            memory.update(chunk, generators=gens)
            theta.append(memory.theta[0].clone())
        written[alone] = theta
    mask1 = memory.slot_masks[1].bool()
    assert torch.equal(written[False][5], written[True][5])  # after the first event: the same
    assert not torch.allclose(written[False][8][mask1], written[True][8][mask1])  # the second event's slot: not
    assert torch.equal(written[True][8][~mask1], written[True][5][~mask1])  # the first slot is back, as it was
    assert written[True][8][~mask1].abs().sum() > 0 and written[True][8][mask1].abs().sum() > 0


@pytest.mark.parametrize("bad", [dict(replay=True), dict(write="events", variant="full_sequence"),
                                 dict(write="events", update_every=2), dict(write="events", event_gate=0.0),
                                 dict(write="sometimes"), dict(write="events", event_top=-1),
                                 dict(event_slots=2), dict(write="events", rank=8, event_slots=3),
                                 dict(write="events", event_slots=-1), dict(write="events", slots_alone=True)])
def test_event_writes_refuse_settings_they_cannot_honour(bad):
    with pytest.raises(ValueError, match="write|replay|event_gate|event_slots|slots_alone"):
        TempLoRAConfig(**bad)


def test_batched_matches_peft_writing_at_events_with_replay(micro_model):
    """The batched memory takes the peft memory's steps under ``write="events"`` with replay: the same events, the same
    windows in the same order, the same draws; env 0, with an event of its own at the same chunk, takes the steps it takes
    alone. Guards: every chunk learned, a window dropped, the windows of one env given to the other."""
    model = micro_model(temp_lora=dict(FAST_LORA, lr=1e-3, draws=2, steps=2, reverse=True, write="events",
                                       replay=True))
    peft_memory, memory = TempLoRA(model), BatchedTempLoRA(model, 2)
    for k, layer in enumerate(peft_memory.layers):
        memory.set_factors(1, k, layer.lora_A["temp_lora"].weight.t(), layer.lora_B["temp_lora"].weight.t())
    alone = BatchedTempLoRA(model, 1)
    for k in range(len(memory.layout)):
        alone.set_factors(0, k, *memory.factors(0, k))
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(7)]
    gen_alone = [torch.Generator().manual_seed(1)]
    torch.manual_seed(7)
    levels = [0, 10, 20, 30, 80, 90, 100, 160, 170]  # events at chunks 4 and 7
    levels_0 = [0, 10, 20, 30, 90, 100, 110, 120, 130]  # env 0: an event at chunk 4 alone, its own latents
    ref, ours = [], []
    for c, (level, level_0) in enumerate(zip(levels, levels_0)):
        chunk, chunk_0 = _scene_chunk(0.0, level), _scene_chunk(0.0, level_0)
        chunk.latents, chunk_0.latents = _chunk(seed=c).latents, _chunk(seed=50 + c).latents
        with torch.enable_grad():
            ref += peft_memory.update(chunk)
        peft_memory.set_enabled(False)
        both = Chunk(torch.cat([chunk_0.frames, chunk.frames]), torch.cat([chunk_0.latents, chunk.latents]), 2)
        ours.append(memory.update(both, generators=gens))
        alone.update(chunk_0, generators=gen_alone)
        peft_memory.set_enabled(True)
    assert [u.steps for u in ref] == [0, 0, 0, 0, 0, 3 * 2, 0, 0, 2 * 3 * 2]  # 3 windows, 2 steps; then with replay
    assert [u[1].steps for u in ours] == [u.steps for u in ref]
    assert [u[0].steps for u in ours] == [0, 0, 0, 0, 0, 3 * 2, 0, 0, 0]
    assert [u[1].loss for u in ours[5::3]] == pytest.approx([u.loss for u in ref[5::3]], rel=1e-4)
    theta = torch.cat([torch.cat([f.flatten() for f in memory.factors(1, k)]) for k in range(len(memory.layout))])
    diff = (theta - _theta_of(peft_memory)).abs()
    assert diff.max() < 0.1 * 1e-3 * 18 and (diff < 1e-6).float().mean() > 0.95, (diff.max(), (diff < 1e-6).float().mean())
    env_0 = torch.cat([f.flatten() for k in range(len(memory.layout)) for f in memory.factors(0, k)])
    by_itself = torch.cat([f.flatten() for k in range(len(memory.layout)) for f in alone.factors(0, k)])
    assert (env_0 - by_itself).abs().max() < 1e-5
    assert memory.events[1].chunks == len(levels) and len(memory.events[1].written) == 2
    memory.fork([1], [0])
    assert memory.events[0].chunks == len(levels) and memory.events[0] is not memory.events[1]
    memory.reset([1])
    assert memory.events[1].chunks == 0 and memory.events[0].written


def test_fast_update_names_episodes_by_their_place_whatever_their_length(tmp_path):
    """`experiments.fast_update.first_window`: episode k is the k-th of the data however many chunks are asked of it,
    and one too short is a clear error. Guards: short episodes skipped (which shifts the index, so that ``--learn``
    and ``--other``, read at other lengths, could name one episode twice)."""
    from envs.episodes import episode_key, write_episodes
    from envs.synthetic import loop_episode
    from experiments.fast_update import first_window

    episodes = [loop_episode(0, 1), loop_episode(1, 3), loop_episode(2, 3)]  # 2, 6 and 6 chunks of 2 frames
    write_episodes(tmp_path / "eps.h5", {episode_key(i): ep for i, ep in enumerate(episodes)})
    window = first_window(str(tmp_path), 2, 2, 1, 4)
    assert np.array_equal(window["frames"][-8:].numpy(), episodes[1]["frames"][1:9])  # the second, not the third
    with pytest.raises(SystemExit, match="has 2 chunks, 4 are needed"):
        first_window(str(tmp_path), 2, 2, 0, 4)
    with pytest.raises(SystemExit, match="holds 3 episodes"):
        first_window(str(tmp_path), 2, 2, 3, 1)


def _protected_memory(model, energy: float, chunks: list[Chunk]) -> BatchedTempLoRA:
    from worldmodel.memory.protect import ordinary_bases

    config = dataclasses.replace(model.config.temp_lora, protect=energy)
    memory = BatchedTempLoRA(model, 1, config)
    memory.protect(ordinary_bases(model, config, chunks, energy))
    memory.reset(generators=[torch.Generator().manual_seed(0)])
    return memory


def test_protected_theta_stays_off_the_ordinary_directions_and_still_learns(model):
    """Guards: A projected only at the reset (Adam's step carries it back onto the ordinary directions) or never;
    and a projection that leaves Θ nothing to learn with."""
    ordinary, noise = [_chunk(seed=s) for s in range(3)], _chunk(seed=10)
    # unlike the ordinary chunks (noise about 0): what a memory is for
    learned = Chunk(noise.frames, 0.2 * noise.latents + torch.tensor([1.5, -1.5, 1.0, -1.0]).view(1, 4, 1, 1, 1), 2)
    memory = _protected_memory(model, 0.9, ordinary)
    assert sum(u.shape[1] for u in memory.protected) > 0
    with memory.applied([0]):
        before = _probe_loss(model, learned)
    for _ in range(12):
        [update] = memory.update(learned, generators=[torch.Generator().manual_seed(2)])
        assert update.steps == 1 and not update.rolled_back
    for lay, u in zip(memory.layout, memory.protected):
        a = memory.theta[0, lay.a_offset: lay.b_offset].view(lay.d_in, -1)
        assert float((u.t() @ a).abs().max()) <= 1e-5 * float(a.abs().max()), "A has a part on ordinary directions"
    with memory.applied([0]):
        after = _probe_loss(model, learned)
    assert after < 0.95 * before, (before, after)


def test_protected_theta_disturbs_ordinary_chunks_less(model):
    """What the projection is for (issue 15's interference): after the same writes, Θ changes the fast loss on the
    ordinary chunks its bases came from far less than an unprotected Θ does."""
    ordinary, learned = [_chunk(seed=s) for s in range(3)], _chunk(seed=10)
    phi = [_probe_loss(model, c) for c in ordinary]
    shift = {}
    for energy in (0.0, 0.99):
        memory = _protected_memory(model, energy, ordinary)
        for _ in range(12):
            memory.update(learned, generators=[torch.Generator().manual_seed(2)])
        with memory.applied([0]):
            shift[energy] = float(np.mean([abs(_probe_loss(model, c) / p - 1) for c, p in zip(ordinary, phi)]))
    assert shift[0.99] < 0.25 * shift[0.0], shift


def test_protect_needs_its_bases_and_the_batched_memory(model):
    config = dataclasses.replace(model.config.temp_lora, protect=0.5)
    memory = BatchedTempLoRA(model, 1, config)
    with pytest.raises(ValueError, match=r"memory.protect\("):
        memory.update(_chunk())
    with pytest.raises(ValueError, match="3 bases for"):
        memory.protect([torch.zeros(4, 0)] * 3)
    with pytest.raises(ValueError, match="the basis of"):
        memory.protect([torch.zeros(1, 0)] * len(memory.layout))
    with pytest.raises(ValueError, match="batched memory's"):
        TempLoRA(model, config)
    with pytest.raises(ValueError, match="protect=1.0"):
        dataclasses.replace(model.config.temp_lora, protect=1.0)

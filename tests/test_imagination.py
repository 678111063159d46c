"""The one chunk loop (`worldmodel.Imagination`): fork gives identical branches; teacher mode; the loop
that model.rollout, the env and evaluation all run."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from worldmodel import BatchedTempLoRA, Imagination, TempLoRA
from worldmodel.diffusion import diffusion_loss

FAST_LORA = dict(rank=2, alpha=4.0, lr=1e-2, draws=1)  # one draw: the fork test compares uint8 frames bitwise, and
# batched-sampling round-off flips a pixel level more often under the larger Θ of 4 draws


@pytest.fixture(scope="module")
def model(micro_model):
    return micro_model(temp_lora=FAST_LORA)


def _action(n: int, k: int) -> dict:
    vec = torch.full((n, 2, 5), 0.1 * k)
    return {"text": ["pan right" if k % 2 else "pan left"] * n, "vector": vec}


def _start(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 1, 16, 16, 3), dtype=np.uint8)


def test_fork_then_the_same_actions_give_identical_chunks(model):
    core = Imagination(model, 3, BatchedTempLoRA(model, 3), denoise_steps=2)
    core.reset([0, 1, 2], _start(3), seeds=[0, 1, 2])
    for k in range(2):  # Θ of env 0 learns from two chunks first
        core.step([0], _action(1, k))
    core.fork([0, 0], [1, 2])
    assert torch.equal(core.memory.theta[1], core.memory.theta[0]) and core.memory.adam_steps[2] == 2
    for k in range(2, 5):
        a = core.step([0, 1], _action(2, k))
        b = core.step([2], _action(1, k + 1))  # branch 2 takes other actions
        assert torch.equal(a.frames[0], a.frames[1]), k  # same state, same RNG, same actions
        assert a.updates[0].loss == pytest.approx(a.updates[1].loss, rel=1e-5)  # batched-kernel round-off
        assert not torch.equal(b.frames[0], a.frames[0])
    # Adam's step ~ lr * sign(g) turns round-off on near-zero gradients into a few flipped entries
    close = torch.isclose(core.memory.theta[0], core.memory.theta[1], rtol=1e-2, atol=2e-4)
    assert close.float().mean() > 0.999, close.float().mean()
    assert not torch.allclose(core.memory.theta[0], core.memory.theta[2])


def test_fork_checks_its_arguments(model):
    core = Imagination(model, 2, BatchedTempLoRA(model, 2), denoise_steps=1)
    with pytest.raises(RuntimeError, match="started"):
        core.fork([0], [1])
    core.reset(None, _start(2))  # unseeded: draws from the global RNG
    with pytest.raises(RuntimeError, match="seeded"):
        core.fork([0], [1])
    core.reset(None, _start(2), seeds=[0, 1])
    with pytest.raises(ValueError, match="distinct"):
        core.fork([0, 1], [1, 1])
    with pytest.raises(IndexError, match="out of range"):
        core.fork([0], [2])
    with pytest.raises(ValueError, match="holds 2 episodes"):
        Imagination(model, 3, core.memory)


def test_teacher_frames_feed_the_memory_and_the_context(model):
    """With teacher frames the memory learns the real chunk and the next chunk starts from it: the same
    as a fresh episode started from those real frames, given the same Θ and RNG."""
    start = _start(1)
    truth = np.random.default_rng(1).integers(0, 256, (1, 2, 16, 16, 3), dtype=np.uint8)
    core = Imagination(model, 2, BatchedTempLoRA(model, 2), denoise_steps=2)
    core.reset(None, np.concatenate([start, start]), seeds=[5, 5])
    core.step([0], _action(1, 0), teacher_frames=truth)
    core.step([1], _action(1, 0))
    assert not torch.equal(core.memory.theta[0], core.memory.theta[1])  # learned different chunks
    with torch.no_grad():
        real_context = model.encode_frames(torch.from_numpy(truth))
    torch.testing.assert_close(core.context[0], real_context[0])


def test_rollout_and_generate_chunk_run_the_core(model):
    """model.rollout is an episode of the core: the peft memory (reset first) learns after every chunk."""
    memory = TempLoRA(model)
    first = _start(1)[0]
    actions = [{"text": "pan right", "vector": np.zeros((2, 5), np.float32)}] * 3
    torch.manual_seed(0)
    video, losses = model.rollout(first, actions, memory=memory, steps=1, generator=torch.Generator().manual_seed(0))
    assert video.shape == (1 + 3 * 2, 16, 16, 3) and len(losses) == 3 and all(np.isfinite(losses))
    assert any(bool(layer.lora_B["temp_lora"].weight.any()) for layer in memory.layers)  # Θ learned
    torch.manual_seed(0)
    again, _ = model.rollout(first, actions, memory=memory, steps=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(video, again)  # the rollout reset Θ: the same episode again
    chunk = model.generate_chunk(first, actions[0], steps=1, generator=torch.Generator().manual_seed(0),
                                 memory=memory)
    assert chunk.updates == []  # sampling only: Θ untouched


def test_bf16_precision_rounds_every_phase_and_keeps_state_float32(model, monkeypatch):
    """precision='bf16' autocasts denoising, decoding and the fast update: the chunk differs from the
    float32 one by bf16 round-off only, while the context latents and Θ stay float32."""
    runs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        core = Imagination(model, 2, BatchedTempLoRA(model, 2), denoise_steps=2, precision=precision)
        core.reset([0, 1], _start(2), seeds=[0, 1])
        # the first chunk learns from given real frames: the same chunk for both precisions
        chunks = [core.step([0, 1], _action(2, 0), teacher_frames=_start(2).repeat(2, axis=1))]
        theta = core.memory.theta.clone()
        chunks.append(core.step([0, 1], _action(2, 1)))
        assert core.context.dtype == torch.float32 and core.memory.theta.dtype == torch.float32
        runs[precision] = (chunks, theta)
    (c32, theta32), (c16, theta16) = runs["fp32"], runs["bf16"]
    assert not torch.equal(c32[0].latents, c16[0].latents)  # autocast did round the sampler's arithmetic
    assert (c32[0].latents - c16[0].latents).abs().max() < 0.2
    assert not torch.equal(theta32, theta16)  # ... and the fast update's (same chunk, same draws)
    frames32, frames16 = (c[1].frames.float() for c in (c32, c16))
    assert (frames32 - frames16).abs().mean() < 8  # uint8 frames agree up to round-off
    with pytest.raises(ValueError, match="unknown precision"):
        Imagination(model, 1, precision="fp16")


def test_auto_precision_follows_the_device(monkeypatch):
    from worldmodel import imagination

    assert imagination.resolve_precision("fp32", "cpu") == "fp32"
    assert imagination.resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(imagination, "cpu_has_native_bf16", lambda: False)
    assert imagination.resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(imagination, "cpu_has_native_bf16", lambda: True)
    assert imagination.resolve_precision("auto", "cpu") == "bf16"


def test_cpu_threads(monkeypatch):
    from worldmodel import loading

    before = torch.get_num_threads()
    cores = len(loading.os.sched_getaffinity(0))
    try:
        assert 0 <= loading._others_running() < 10_000  # reads this machine's /proc
        monkeypatch.setattr(loading, "_others_running", lambda: 0)
        assert loading.free_cpu_threads() == cores  # nothing else runs
        monkeypatch.setattr(loading, "_others_running", lambda: cores + 3)
        assert loading.free_cpu_threads() == 1  # a busy machine: one thread, never zero
        assert loading.set_cpu_threads("auto") == 1 and torch.get_num_threads() == 1
        assert loading.set_cpu_threads(None) == 1
        for bad in (0, -1, True, "many"):
            with pytest.raises(ValueError, match="positive int"):
                loading.set_cpu_threads(bad)
    finally:
        torch.set_num_threads(before)


@pytest.mark.alone  # its first check assumes no other test runs (under pytest-xdist)
def test_others_running_sees_a_busy_process():
    """A process spinning on a core is counted; this process's own threads are not."""
    import subprocess
    import sys

    from worldmodel import loading

    torch.ones(512, 512) @ torch.ones(512, 512)  # this process's OpenMP threads may spin a while: not counted
    assert loading._others_running() <= 1 + len(loading.os.sched_getaffinity(0))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert max(loading._others_running() for _ in range(5)) >= 1
    finally:
        busy.kill()
        busy.wait()


def test_compiled_unet_gives_the_same_chunks_and_memories(micro_model):
    """`compile_unet` compiles the UNet in place: the batched Θ hooks are traced into the graph with Θ as an
    input, so sampling matches eager while Θ changes from chunk to chunk; the fast update runs eager, so one
    graph in all, unless ``compile_fast_update`` (then its graphs give the same Θ). (Dynamo alone here, backend
    "eager": what could go wrong is what it traces, and inductor's C++ build is slow on CPU.)"""
    def run(model, compile_fast_update=False):
        core = Imagination(model, 2, BatchedTempLoRA(model, 2), denoise_steps=2,
                           compile_fast_update=compile_fast_update)
        core.reset(None, _start(2), seeds=[0, 1])
        chunks = [core.step(None, _action(2, k)) for k in range(3)]
        return [c.frames for c in chunks], [u.loss for c in chunks for u in c.updates], core.memory.theta

    # one UNet block, Θ on its layers (the mid block's): Dynamo's tracing, most of the test's time, takes half as long
    # as on two blocks, and the mechanism is the same
    eager = micro_model(blocks=(16,), temp_lora=dict(FAST_LORA, blocks=()))
    compiled = micro_model(blocks=(16,), temp_lora=dict(FAST_LORA, blocks=()))
    compiled.compile_unet(backend="eager")
    compiled.compile_unet(backend="eager")  # again: nothing changes
    compiled.compile_decoder(backend="eager")  # the frames decoded by its graph
    assert compiled.unet._compiled_call_impl is not None and "unet.conv_in.weight" in compiled.state_dict()
    assert compiled.vae.decoder._compiled_call_impl is not None
    torch._dynamo.reset()
    frames_e, losses_e, theta_e = run(eager)
    frames_c, losses_c, theta_c = run(compiled)
    assert theta_e.abs().max() > 0.05  # Θ learned, so a graph holding Θ as a constant would differ
    for a, b in zip(frames_e, frames_c):
        assert torch.equal(a, b)
    assert losses_c == pytest.approx(losses_e, rel=1e-5)
    assert torch.allclose(theta_c, theta_e, atol=1e-6)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2  # sampling, decoding; the fast update eager
    # compile_fast_update: the fast update's forward is traced too (a third graph), with the same Θ
    _, losses_f, theta_f = run(compiled, compile_fast_update=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 2
    assert losses_f == pytest.approx(losses_e, rel=1e-5)
    assert torch.allclose(theta_f, theta_e, atol=1e-6)


def _reusing(model, n: int) -> BatchedTempLoRA:
    return BatchedTempLoRA(model, n, dataclasses.replace(model.config.temp_lora, reuse_sampler_pass=True))


def test_a_reused_pass_is_the_fast_step_of_that_pass(model, monkeypatch):
    """With ``reuse_sampler_pass`` the chunk is what Θ as it stood generates, and the fast step's gradient is that of
    the sampler's first pass scored on the chunk: `diffusion_loss` with the chunk's action, the sampler's first
    timestep and the noise that takes the chunk to the sampler's initial noise."""
    memory = _reusing(model, 4)
    core = Imagination(model, 4, memory, denoise_steps=2, guidance_scale=1.0)
    core.reset(None, _start(4), seeds=[0, 1, 2, 3])
    core.step([0, 1], _action(2, 0))  # Θ learns once (its first chunk is Φ's: B = 0)
    assert memory.theta[:2].abs().amax(1).gt(0).all()
    core.fork([0, 1], [2, 3])
    sampled = core.step([2, 3], _action(2, 1), learn=False)  # the same state, sampling only
    before = memory.theta[[0, 1]].clone()
    states = [core.generators[i].get_state() for i in (0, 1)]
    grads = []
    adam = memory._adam
    monkeypatch.setattr(memory, "_adam",
                        lambda envs, grad, *rest: (grads.append(grad.clone()), adam(envs, grad, *rest))[1])
    chunk = core.step([0, 1], _action(2, 1))
    torch.testing.assert_close(chunk.latents, sampled.latents, rtol=1e-4, atol=1e-5)
    assert [u.steps for u in chunk.updates] == [1, 1] and len(grads) == 1
    # the same gradient, computed the long way
    cfg = model.config
    shape = (1, cfg.latent_channels, cfg.new_frames, cfg.latent_size, cfg.latent_size)
    initial = torch.cat([torch.randn(shape, generator=torch.Generator().set_state(s)) for s in states])
    sampler = model.sampler()
    sampler.set_timesteps(2)
    t = sampler.timesteps[0]
    alpha = model.scheduler.alphas_cumprod[t]
    new = chunk.new_latents
    noise = torch.cat([torch.zeros_like(chunk.latents[:, :, :cfg.context_frames]),
                       (initial * sampler.init_noise_sigma - alpha.sqrt() * new) / (1 - alpha).sqrt()], dim=2)
    given = torch.zeros(2, chunk.latents.shape[2], dtype=torch.bool)
    given[:, :cfg.context_frames] = True
    leaves = [(a.detach().requires_grad_(True), b.detach().requires_grad_(True)) for a, b in memory._split(before)]
    with torch.enable_grad(), memory._using(leaves):
        loss = diffusion_loss(model.unet, model.scheduler, chunk.latents, given,
                              model.encode_action(_action(2, 1), 2), noise, t.expand(2), per_sample=True)
        expected = torch.autograd.grad(loss.sum(), [f for ab in leaves for f in ab])
    expected = torch.cat([g.reshape(2, -1) for g in expected], dim=1)
    assert [u.loss for u in chunk.updates] == pytest.approx(loss.tolist(), rel=1e-4)
    torch.testing.assert_close(grads[0], expected, rtol=1e-3, atol=1e-7)


def test_a_reused_pass_learns_each_env_as_alone_and_a_repeated_chunk(model):
    """Envs stepped together learn what each learns alone; the loss of a chunk taught again and again (teacher
    frames, the same start) falls."""
    truth = np.random.default_rng(3).integers(0, 256, (1, 2, 16, 16, 3), dtype=np.uint8)
    starts = _start(2)

    def run(core, rows):  # six times: the same start, the same real chunk; Θ kept
        losses = []
        ids = list(range(len(rows)))
        for k in range(6):
            core.reset(ids, starts[rows], seeds=rows, forget=k == 0)
            chunk = core.step(ids, _action(len(ids), 0), teacher_frames=np.repeat(truth, len(ids), axis=0))
            losses.append([u.loss for u in chunk.updates])
        return np.array(losses), core.memory.theta

    losses, theta = run(Imagination(model, 2, _reusing(model, 2), denoise_steps=2), [0, 1])
    for row in (0, 1):
        alone, theta_alone = run(Imagination(model, 1, _reusing(model, 1), denoise_steps=2), [row])
        np.testing.assert_allclose(losses[:, row], alone[:, 0], rtol=1e-4)
        torch.testing.assert_close(theta[row], theta_alone[0], rtol=1e-3, atol=1e-4)
    assert (losses[-1] < 0.8 * losses[0]).all(), losses  # the repeated chunk is learnt


def test_at_one_pass_a_generated_chunk_takes_the_usual_step(model):
    """At one denoising pass the sampler's prediction is the chunk it generates: scored on that pass a generated chunk's
    loss is exactly 0 and Θ learns nothing. There the reusing memory takes the usual step (its own forward at a fresh
    draw), exactly as a memory without ``reuse_sampler_pass``; under teacher forcing it still learns from the pass."""
    base = model.config.temp_lora
    runs = {}
    for reuse in (True, False):
        core = Imagination(model, 2, BatchedTempLoRA(model, 2, dataclasses.replace(base, reuse_sampler_pass=reuse)),
                           denoise_steps=1)
        core.reset(None, _start(2), seeds=[0, 1])
        chunks = [core.step(None, _action(2, k)) for k in range(2)]
        runs[reuse] = ([u.loss for c in chunks for u in c.updates], core.memory.theta.clone())
    losses, theta = runs[True]
    assert min(losses) > 1e-3, losses
    assert losses == pytest.approx(runs[False][0], rel=1e-5)
    torch.testing.assert_close(theta, runs[False][1])
    truth = np.random.default_rng(4).integers(0, 256, (2, 2, 16, 16, 3), dtype=np.uint8)
    memory = _reusing(model, 2)
    core = Imagination(model, 2, memory, denoise_steps=1)
    core.reset(None, _start(2), seeds=[0, 1])
    grad_calls = []
    handle = model.unet.register_forward_pre_hook(lambda module, args: grad_calls.append(torch.is_grad_enabled()))
    try:
        taught = core.step(None, _action(2, 0), teacher_frames=truth)
    finally:
        handle.remove()
    assert grad_calls == [True] and min(u.loss for u in taught.updates) > 1e-3  # the sampler's one pass, reused
    with pytest.raises(ValueError, match="no reused pass"):
        memory.update(taught, [0, 1], own_forward=True, reused=memory.reused_pass([0, 1]))


def test_a_reused_pass_needs_its_rule_and_its_pass(model):
    base = model.config.temp_lora
    with pytest.raises(ValueError, match="steps=2, reverse=True"):
        dataclasses.replace(base, reuse_sampler_pass=True, steps=2, reverse=True)
    with pytest.raises(ValueError, match="peft memory"):
        TempLoRA(model, dataclasses.replace(base, reuse_sampler_pass=True))
    memory = _reusing(model, 1)
    core = Imagination(model, 1, memory, denoise_steps=1)
    core.reset(None, _start(1), seeds=[0])
    chunk = core.step(None, _action(1, 0), learn=False)
    with pytest.raises(ValueError, match="Imagination.step"):
        memory.update(chunk, [0])
    with pytest.raises(ValueError, match="reuse_sampler_pass=False"):
        BatchedTempLoRA(model, 1).update(chunk, [0], reused=memory.reused_pass([0]))


def test_a_reused_pass_learns_only_the_envs_due(model):
    """With ``update_every`` = 2, envs stepped together learn from the one pass only where their chunk is due: the
    others' Θ stays as it was, and a due env learns what it learns alone."""
    config = dataclasses.replace(model.config.temp_lora, reuse_sampler_pass=True, update_every=2)
    core = Imagination(model, 2, BatchedTempLoRA(model, 2, config), denoise_steps=2)
    core.reset(None, _start(2), seeds=[0, 1])
    first = core.step([1], _action(1, 0))  # env 1's first chunk: remembered, not learned
    assert first.updates[0].steps == 0
    before = core.memory.theta.clone()
    both = core.step([0, 1], _action(2, 1))  # env 1's second chunk is due, env 0's first is not
    assert [u.steps for u in both.updates] == [0, 1]
    assert torch.equal(core.memory.theta[0], before[0]) and not torch.equal(core.memory.theta[1], before[1])
    alone = Imagination(model, 1, BatchedTempLoRA(model, 1, config), denoise_steps=2)
    alone.reset(None, _start(2)[1:], seeds=[1])
    alone.step(None, _action(1, 0))
    alone.step(None, _action(1, 1))
    torch.testing.assert_close(core.memory.theta[1], alone.memory.theta[0], rtol=1e-3, atol=1e-4)


def test_a_reused_pass_is_not_run_where_no_env_is_due(model):
    """With ``update_every`` = 2 a step where no env's chunk is due samples as without the reused pass: no UNet call
    under a gradient (no graph kept for nothing, and on the compiled GPU sampler no eager pass), the chunk the one a
    sampling-only step draws and Θ unchanged; the next step, due, learns from its pass."""
    config = dataclasses.replace(model.config.temp_lora, reuse_sampler_pass=True, update_every=2)
    grad_calls = []
    handle = model.unet.register_forward_pre_hook(lambda module, args: grad_calls.append(torch.is_grad_enabled()))
    try:
        cores = [Imagination(model, 2, BatchedTempLoRA(model, 2, config), denoise_steps=2) for _ in range(2)]
        for core in cores:
            core.reset(None, _start(2), seeds=[0, 1])
        assert cores[0].memory.due() == [False, False]
        theta = cores[0].memory.theta.clone()
        grad_calls.clear()
        chunk = cores[0].step(None, _action(2, 0))
        assert grad_calls and not any(grad_calls)
        assert [u.steps for u in chunk.updates] == [0, 0] and torch.equal(cores[0].memory.theta, theta)
        assert torch.equal(chunk.frames, cores[1].step(None, _action(2, 0), learn=False).frames)
        assert cores[0].memory.due() == [True, True]
        grad_calls.clear()
        due = cores[0].step(None, _action(2, 1))
        assert any(grad_calls) and [u.steps for u in due.updates] == [1, 1]
        assert not torch.equal(cores[0].memory.theta, theta)
    finally:
        handle.remove()


def test_a_reused_pass_under_a_compiled_unet(micro_model):
    """Under `compile_unet` the reused first pass runs eager (one graph, the sampler's) unless ``compile_fast_update``
    (then a second graph, the pass with its gradient); either way the chunks and Θ are the eager ones."""
    reuse = dict(FAST_LORA, reuse_sampler_pass=True, blocks=())  # Θ on the one block's layers (below)

    def run(model, compile_fast_update=False):
        core = Imagination(model, 2, BatchedTempLoRA(model, 2), denoise_steps=2,
                           compile_fast_update=compile_fast_update)
        core.reset(None, _start(2), seeds=[0, 1])
        chunks = [core.step(None, _action(2, k)) for k in range(3)]
        return [c.frames for c in chunks], core.memory.theta

    compiled = micro_model(blocks=(16,), temp_lora=reuse)
    compiled.compile_unet(backend="eager")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    frames_e, theta_e = run(micro_model(blocks=(16,), temp_lora=reuse))
    frames_c, theta_c = run(compiled)
    assert theta_e.abs().max() > 0.05
    assert all(torch.equal(a, b) for a, b in zip(frames_e, frames_c))
    assert torch.allclose(theta_c, theta_e, atol=1e-6)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    _, theta_f = run(compiled, compile_fast_update=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 1
    assert torch.allclose(theta_f, theta_e, atol=1e-5)

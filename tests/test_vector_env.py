"""Batched SlowFastVGen-v0: equals N single envs, N independent memories, batched LoRA == peft, autoreset, SB3."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers SlowFastVGen-v0)
from agents.sb3 import SB3VecEnv
from envs.synthetic import SYNTHETIC_SKILLS
from envs.world_model_env import WorldModelEnv, WorldModelVectorEnv
from worldmodel import Chunk, TempLoRA
from worldmodel.attention import BatchChunkedAttnProcessor, use_chunked_attention
from worldmodel.config import DEFAULT_LORA_TARGETS
from worldmodel.diffusion import diffusion_loss
from worldmodel.memory import BatchedTempLoRA
from worldmodel.memory.rule import draw_loss_noise




FAST_LORA = dict(rank=2, alpha=4.0, lr=1e-2)  # a fast memory whose updates show within a few steps


@pytest.fixture(scope="module")
def model(micro_model):
    return micro_model(temp_lora=FAST_LORA)


OPTS = dict(skills=SYNTHETIC_SKILLS, denoise_steps=2, max_episode_steps=50)
ACTIONS = np.array([[0, 1, 2, 0], [1, 1, 0, 2], [2, 0, 1, 1]])


@pytest.mark.parametrize("objective", ["joint", "conditional"])
def test_vector_env_equals_four_single_envs(model, objective):
    opts = dict(OPTS, temp_lora=dataclasses.replace(model.config.temp_lora, objective=objective))
    venv = gym.make_vec("SlowFastVGen-v0", num_envs=4, vectorization_mode="vector_entry_point", model=model, **opts)
    assert isinstance(venv.unwrapped, WorldModelVectorEnv)
    obs, _ = venv.reset(seed=10)
    vec_frames, vec_losses = [obs], []
    for a in ACTIONS:
        obs, reward, terminated, truncated, info = venv.step(a)
        vec_frames.append(info["frames"])
        vec_losses.append(info["fast_loss"])
        assert obs.shape == (4, 16, 16, 3) and reward.shape == (4,) and not (terminated | truncated).any()
    vec_theta = venv.unwrapped.memory.theta.detach().clone()
    for i in range(4):
        env = WorldModelEnv(model=model, **opts)
        obs, _ = env.reset(seed=10 + i)
        frames, losses = [obs], []
        for a in ACTIONS:
            _, _, _, _, info = env.step(a[i])
            frames.append(info["frames"])
            losses.append(info["fast_loss"])
        for k, f in enumerate(frames):  # batched kernels may round differently: allow 1/255 on a few pixels
            diff = np.abs(vec_frames[k][i].astype(int) - f)
            assert diff.max() <= 2 and diff.mean() < 0.05, (i, k, diff.max())
        np.testing.assert_allclose([v[i] for v in vec_losses], losses, rtol=1e-4)
        close = torch.isclose(vec_theta[i], env.memory.theta.detach()[0], rtol=1e-2, atol=2e-4)  # Adam: lr 1e-2
        if objective == "joint":
            assert close.all()
        else:  # Adam turns batched-kernel round-off on near-zero gradients into a few flipped elements
            assert close.float().mean() > 0.999, close.float().mean()
    # the 4 memories learned different things (different actions and seeds)
    assert not torch.allclose(vec_theta[0], vec_theta[1])
    venv.close()


def test_a_step_that_fails_late_rolls_back_every_step_of_the_update(model, monkeypatch):
    """A two-step update whose second step explodes for one env puts that env's Θ and Adam state back as they were
    before the first step, the other env's update stands; the usual step and the one on the sampler's first pass
    report a rollback alike (one settling of an update, `BatchedTempLoRA._settle`)."""
    from worldmodel import Imagination
    from worldmodel.memory import rule

    def run(config, fail_at):
        memory = BatchedTempLoRA(model, 2, config)
        core = Imagination(model, 2, memory, denoise_steps=2)
        core.reset(None, np.zeros((2, 1, 16, 16, 3), np.uint8), seeds=[0, 1])
        core.step(None, {"text": ["pan left"] * 2, "vector": torch.zeros(2, 2, 5)})  # Θ and Adam hold something
        before = (memory.theta.clone(), memory.exp_avg.clone(), memory.adam_steps.clone())
        calls = []
        real = rule.rolls_back

        def rolls_back(*args):  # the fail_at-th check of this update explodes
            calls.append(1)
            return len(calls) == fail_at or real(*args)

        monkeypatch.setattr(rule, "rolls_back", rolls_back)
        chunk = core.step(None, {"text": ["pan right"] * 2, "vector": torch.zeros(2, 2, 5)})
        monkeypatch.setattr(rule, "rolls_back", real)
        return chunk.updates, before, memory

    two_steps = dataclasses.replace(model.config.temp_lora, steps=2)
    updates, before, memory = run(two_steps, fail_at=4)  # checks: env 0, env 1 (step 1), env 0, env 1 (step 2)
    assert [u.rolled_back for u in updates] == [False, True] and memory.rollbacks == [0, 1]
    assert torch.equal(memory.theta[1], before[0][1]) and torch.equal(memory.exp_avg[1], before[1][1])
    assert memory.adam_steps[1] == before[2][1] and memory.adam_steps[0] == before[2][0] + 2
    reuse = dataclasses.replace(model.config.temp_lora, reuse_sampler_pass=True)
    updates, before, memory = run(reuse, fail_at=2)
    assert [u.rolled_back for u in updates] == [False, True] and memory.rollbacks == [0, 1]
    assert torch.equal(memory.theta[1], before[0][1]) and not torch.equal(memory.theta[0], before[0][0])


def test_a_one_step_update_copies_no_state_and_a_non_finite_gradient_writes_nothing(model, monkeypatch):
    """A one-step fast update takes no copy of the state to roll back to (at 256 envs of the default such a copy was
    as large as Θ's state itself, 2.5 GiB): a failed row writes nothing. Adam's step skips a row whose gradient is
    not finite, leaving that env's factors, moments and step count as they were, and reports it not taken."""
    memory = BatchedTempLoRA(model, 2)
    monkeypatch.setattr(memory, "_snapshot", lambda ids: pytest.fail("a one-step update copied the state"))
    bad = torch.randn(2, 4, 4, 8, 8)
    bad[1, 0, 0, 0, 0] = float("nan")
    updates = memory.update(Chunk(torch.zeros(2, 2, 16, 16, 3, dtype=torch.uint8), bad, 2))
    assert [u.rolled_back for u in updates] == [False, True] and memory.rollbacks == [0, 1]
    state = (memory.theta, memory.exp_avg, memory.exp_avg_sq, memory.adam_steps)
    before = [t.clone() for t in state]
    grad = torch.randn(2, memory.num_parameters_per_env)
    grad[1, 5] = float("inf")
    taken, _ = memory._adam([0, 1], grad)
    assert taken == [True, False]
    assert not torch.equal(memory.theta[0], before[0][0]) and memory.adam_steps[0] == before[3][0] + 1
    assert all(torch.equal(now[1], then[1]) for now, then in zip(state, before))


def test_memories_are_independent(model):
    def run(env0_actions):
        venv = WorldModelVectorEnv(num_envs=2, model=model, **OPTS)
        venv.reset(seed=0)
        frames = []
        for a0 in env0_actions:
            _, _, _, _, info = venv.step(np.array([a0, 2]))
            frames.append(info["frames"])
        return np.stack(frames), venv.memory.theta.detach().clone()

    fa, ta = run([0, 0, 0])
    fb, tb = run([1, 2, 1])
    assert not np.array_equal(fa[:, 0], fb[:, 0]) and not torch.equal(ta[0], tb[0])  # env 0 differs
    assert np.array_equal(fa[:, 1], fb[:, 1]) and torch.equal(ta[1], tb[1])  # env 1 untouched by env 0

    # A fast update of env 0 alone leaves env 1's factors and Adam state as they were.
    memory = BatchedTempLoRA(model, 2)
    before = memory.theta.detach().clone()
    latents = torch.randn(1, 4, 4, 8, 8)
    [update] = memory.update(Chunk(torch.zeros(1, 2, 16, 16, 3, dtype=torch.uint8), latents, 2), ids=[0])
    assert update.steps == 1 and not update.rolled_back
    assert not torch.equal(memory.theta[0], before[0]) and torch.equal(memory.theta[1], before[1])
    assert memory.exp_avg[1].abs().sum() == 0 and memory.adam_steps.tolist() == [1, 0]
    # per-env reset and per-env rollback
    memory.reset([0], [torch.Generator().manual_seed(0)])
    assert all(not memory.factors(0, k)[1].any() for k in range(len(memory.layout)))
    memory.update(Chunk(torch.zeros(2, 2, 16, 16, 3, dtype=torch.uint8), torch.randn(2, 4, 4, 8, 8), 2))
    good = memory.theta.detach().clone()
    bad = torch.randn(2, 4, 4, 8, 8)
    bad[1, 0, 0, 0, 0] = float("nan")
    ups = memory.update(Chunk(torch.zeros(2, 2, 16, 16, 3, dtype=torch.uint8), bad, 2))
    assert not ups[0].rolled_back and ups[1].rolled_back and memory.rollbacks == [0, 1]
    assert not torch.equal(memory.theta[0], good[0]) and torch.equal(memory.theta[1], good[1])

    # Splitting the fast step into groups of envs (max_batch) gives the same factors. Seeded: with inputs
    # from the global RNG the outcome depended on which tests ran before (Adam's first step ~ lr * sign(g)
    # magnifies float reassociation where a gradient is near zero).
    torch.manual_seed(0)
    whole, split = BatchedTempLoRA(model, 3), BatchedTempLoRA(model, 3, max_batch=2)
    gens = [[torch.Generator().manual_seed(s) for s in range(3)] for _ in range(4)]
    whole.reset(generators=gens[0])
    split.reset(generators=gens[1])
    chunk = Chunk(torch.zeros(3, 2, 16, 16, 3, dtype=torch.uint8), torch.randn(3, 4, 4, 8, 8), 2)
    a, b = whole.update(chunk, generators=gens[2]), split.update(chunk, generators=gens[3])
    assert [u.loss for u in a] == pytest.approx([u.loss for u in b], rel=1e-5)
    torch.testing.assert_close(whole.theta, split.theta, atol=1e-4, rtol=1e-3)  # Adam step ~ lr * sign(g), lr 1e-2


def _peak_cpu_bytes(fn) -> int:
    """The most bytes held at once by the tensors ``fn`` allocates on the CPU (torch.profiler's memory events: each
    op's own allocations at its start, each free as it happens)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    held = peak = 0
    for event in sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start):
        held += event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak


@pytest.mark.parametrize("blocks", [(), ("up_blocks",)])
def test_recomputed_fast_step_learns_the_same_with_less_kept(blocks, micro_model):
    """With the adapted blocks recomputed layer by layer in the backward (`recompute`, issue 16's memory overhead) the
    fast update gives the same factors, the graph keeps fewer bytes of activations and the step's peak memory is less
    than half (whole blocks as the recomputed units saved nothing: the largest block's activations are most of the
    graph); the UNet's layers are put back after."""
    model = micro_model(temp_lora=dict(FAST_LORA, blocks=blocks))
    kept: list[int] = []
    peaks: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[-1] += t.numel() * t.element_size()
        return t

    thetas = []
    for recompute in (False, True):
        torch.manual_seed(0)
        memory = BatchedTempLoRA(model, 2, recompute=recompute)
        gens = [[torch.Generator().manual_seed(s) for s in range(2)] for _ in range(3)]
        memory.reset(generators=gens[0])
        chunk = Chunk(torch.zeros(2, 2, 16, 16, 3, dtype=torch.uint8), torch.randn(2, 4, 4, 8, 8), 2)
        kept.append(0)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            memory.update(chunk, generators=gens[1])
        thetas.append(memory.theta.detach().clone())
        peaks.append(_peak_cpu_bytes(lambda: memory.update(chunk, generators=gens[2])))
    torch.testing.assert_close(thetas[0], thetas[1], atol=1e-5, rtol=1e-4)
    assert thetas[0].abs().sum() > 0
    assert kept[1] < 0.5 * kept[0], kept
    assert peaks[1] < 0.5 * peaks[0], peaks
    assert all("forward" not in module.__dict__ for module in model.unet.modules())


@pytest.mark.parametrize("objective,blocks,convs", [("joint", (), ()), ("conditional", (), ()),
                                                   ("conditional", ("up_blocks",), ()),
                                                   ("conditional", ("up_blocks",), ("conv1", "conv2"))])
def test_batched_lora_matches_peft_temp_lora(objective, blocks, convs, micro_model):
    """Per-sample factors give peft's outputs, and one fast update follows TempLoRA.update; with Θ in
    the up blocks only, both memories adapt the same (fewer) layers; with the resnets' 3x3 convolutions too, the
    batched memory's patches (`F.unfold`) give peft's conv LoRA."""
    targets = DEFAULT_LORA_TARGETS + convs
    model = micro_model(temp_lora=dict(FAST_LORA, objective=objective, blocks=blocks, target_modules=targets))
    peft_memory = TempLoRA(model)  # peft-injected; batched hooks find the base layers
    memory = BatchedTempLoRA(model, 2)
    assert len(memory.layout) == len(peft_memory.layers)
    peft_names = [n.split(".lora_")[0] for n, _ in model.unet.named_parameters() if "lora_A" in n]
    assert [n.replace(".base_layer", "") for n in peft_names] == [n for n, _ in memory._dispatch.layers]
    if convs:
        kernels = [layer.kernel_size for _, layer in memory._dispatch.layers if isinstance(layer, torch.nn.Conv2d)]
        assert kernels and all(k == (3, 3) for k in kernels), kernels
    if blocks:
        assert all(n.startswith("up_blocks.") for n in peft_names)
        assert 0 < len(peft_names) < len(BatchedTempLoRA(micro_model(temp_lora=dict(FAST_LORA, blocks=())), 1).layout)
        with pytest.raises(ValueError, match="no target layers .* inside \\('down_block',\\)"):
            BatchedTempLoRA(micro_model(temp_lora=dict(FAST_LORA, blocks=("down_block",))), 1)
    with torch.no_grad():
        for k, layer in enumerate(peft_memory.layers):
            a, b = layer.lora_A["temp_lora"].weight, layer.lora_B["temp_lora"].weight
            b.normal_(std=0.1)
            a, b = a.flatten(1).t(), b.flatten(1).t()  # a conv's (r, C, k, k) and (d_out, r, 1, 1)
            memory.set_factors(1, k, a, b)
            memory.set_factors(0, k, torch.randn_like(a), torch.randn_like(b))
    x, t = torch.randn(2, 9, 4, 8, 8), torch.tensor([10, 700])
    cond = model.action_encoder.null(2).detach() + 0.1 * torch.randn(2, 9, 16)
    with torch.no_grad():
        ref = model.unet(x[1:], t[1:], encoder_hidden_states=cond[1:]).sample  # peft, env-1 factors
        peft_memory.set_enabled(False)
        with memory.applied():
            both = model.unet(x, t, encoder_hidden_states=cond).sample
        with memory.applied():  # classifier-free guidance doubles the batch: [cond, null]
            doubled = model.unet(x.repeat(2, 1, 1, 1, 1), t.repeat(2),
                                 encoder_hidden_states=cond.repeat(2, 1, 1)).sample
        plain = model.unet(x[1:], t[1:], encoder_hidden_states=cond[1:]).sample
        with memory._merged(memory.theta[1]):  # env 1's Θ folded into the weights, a conv's in its kernel's layout
            merged = model.unet(x[1:], t[1:], encoder_hidden_states=cond[1:]).sample
        # attention split into pieces (as at large batches on a GPU): the hooks still see whole batches
        model.unet.set_attn_processor(BatchChunkedAttnProcessor(max_batch=50))  # temporal: 2 x 8 x 8 sequences
        try:
            with memory.applied():
                chunked = model.unet(x, t, encoder_hidden_states=cond).sample
        finally:
            use_chunked_attention(model.unet)
    torch.testing.assert_close(chunked, both, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[1:], ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(doubled[3:], ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(merged, ref, atol=1e-4, rtol=1e-4)
    assert (plain - ref).abs().max() > 1e-2  # the factors matter

    # The per-sample loss equals diffusion_loss under the same draws.
    latents, given = torch.randn(1, 4, 4, 8, 8), torch.zeros(1, 4, dtype=torch.bool)
    null = model.action_encoder.null(1).detach()
    torch.manual_seed(5)
    expected = diffusion_loss(model.unet, model.scheduler, latents, given, null)
    noise, tt = draw_loss_noise(latents.shape[1:], torch.Generator().manual_seed(5), 1000)
    got = diffusion_loss(model.unet, model.scheduler, latents, given, null, noise[None], tt, per_sample=True)
    torch.testing.assert_close(got[0], expected)

    # One fast step from a fresh memory: same loss, same new factors as TempLoRA.update.
    peft_memory.set_enabled(True)
    peft_memory.reset()
    memory.reset()
    for k, layer in enumerate(peft_memory.layers):
        memory.set_factors(1, k, layer.lora_A["temp_lora"].weight.flatten(1).t(),
                           layer.lora_B["temp_lora"].weight.flatten(1).t())
    chunk = Chunk(torch.zeros(1, 2, 16, 16, 3, dtype=torch.uint8), latents, 2)
    torch.manual_seed(3)
    with torch.enable_grad():
        [ref_update] = peft_memory.update(chunk)
    peft_memory.set_enabled(False)
    both = Chunk(torch.zeros(2, 2, 16, 16, 3, dtype=torch.uint8), torch.cat([torch.randn_like(latents), latents]), 2)
    updates = memory.update(both, generators=[torch.Generator().manual_seed(1), torch.Generator().manual_seed(3)])
    assert updates[1].loss == pytest.approx(ref_update.loss, rel=1e-5)
    ours = torch.cat([torch.cat([f.flatten() for f in memory.factors(1, k)]) for k in range(len(memory.layout))])
    ref = torch.cat([torch.cat([layer.lora_A["temp_lora"].weight.flatten(1).t().flatten(),
                                layer.lora_B["temp_lora"].weight.flatten(1).t().flatten()])
                     for layer in peft_memory.layers])
    # Adam's first step is ~lr * sign(g): entries whose |g| is near eps (1e-8) may differ by float noise.
    diff = (ours - ref).abs()
    lr = model.config.temp_lora.lr
    assert diff.max() < 0.1 * lr and (diff < 1e-6).float().mean() > 0.99, (diff.max(), (diff < 1e-6).float().mean())


def test_one_env_samples_with_theta_merged_and_phi_put_back(micro_model):
    """At one env and no gradient, Θ is folded into the weights (no low-rank hook runs) and gives the hooks' output;
    Φ's weights are the same tensors with the same values after the block. Guards: the merge skipped (hooks run), a
    merge without the scaling alpha / r (here 2) or transposed, weights not restored."""
    torch.manual_seed(1)  # fixed draws: on ~3% of seeds the fold-in's round-off passes atol at a few elements
    model = micro_model(temp_lora=FAST_LORA)
    memory = BatchedTempLoRA(model, 2)
    with torch.no_grad():
        for k, layer in enumerate(memory.layout):
            a, b = memory.factors(1, k)
            memory.set_factors(1, k, torch.randn_like(a), 0.1 * torch.randn_like(b))
    x, t = torch.randn(1, 9, 4, 8, 8), torch.tensor([300])
    cond = model.action_encoder.null(1).detach() + 0.1 * torch.randn(1, 9, 16)
    before = {n: (p.data_ptr(), p.data.clone()) for n, p in model.unet.named_parameters()}
    calls = []
    real_delta = memory._delta
    memory._delta = lambda *args: calls.append(1) or real_delta(*args)
    with torch.no_grad():
        plain = model.unet(x, t, encoder_hidden_states=cond).sample
        with memory.applied([1]):
            merged = model.unet(x, t, encoder_hidden_states=cond).sample
        assert not calls
        memory.config = dataclasses.replace(memory.config, merge_for_inference=False)
        with memory.applied([1]):
            hooked = model.unet(x, t, encoder_hidden_states=cond).sample
        assert calls
    torch.testing.assert_close(merged, hooked, atol=1e-5, rtol=1e-4)
    assert (merged - plain).abs().max() > 1e-2  # Θ matters
    for n, p in model.unet.named_parameters():
        assert p.data_ptr() == before[n][0] and torch.equal(p.data, before[n][1]), n


def test_autoreset_modes(model):
    opts = {**OPTS, "max_episode_steps": 2, "temp_lora": False, "denoise_steps": 1}
    venv = WorldModelVectorEnv(num_envs=2, model=model, **opts)
    venv.reset(seed=0)
    venv.step(np.array([0, 1]))
    _, _, _, truncated, _ = venv.step(np.array([0, 1]))
    assert truncated.all()
    obs, reward, terminated, truncated, info = venv.step(np.array([0, 1]))  # next-step autoreset
    assert not (terminated | truncated).any() and (reward == 0).all() and info["_start_index"].all()
    assert venv.batch.step_counts.tolist() == [0, 0]

    same = WorldModelVectorEnv(num_envs=2, model=model, autoreset_mode="same_step", **opts)
    same.reset(seed=0)
    same.step(np.array([0, 1]))
    obs, _, _, truncated, info = same.step(np.array([0, 1]))
    assert truncated.all() and info["_final_obs"].all() and same.batch.step_counts.tolist() == [0, 0]
    assert not np.array_equal(info["final_obs"][0], obs[0])  # obs is already the next episode's

    partial = WorldModelVectorEnv(num_envs=2, model=model, **opts)
    obs0, _ = partial.reset(seed=0)
    parse, parsed = partial.batch.parse_action, []
    partial.batch.parse_action = lambda action: parsed.append(action) or parse(action)
    partial.step(np.array([0, 0]))
    assert len(parsed) == 2  # each action parsed once: checked before any env changes, then stepped as parsed
    del partial.batch.parse_action
    obs, _ = partial.reset(options={"reset_mask": np.array([False, True])})
    assert partial.batch.step_counts.tolist() == [1, 0]
    with pytest.raises(ValueError, match="actions for 2 envs"):
        partial.step(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="out of range"):
        partial.step(np.array([0, 5]))
    assert partial.batch.step_counts.tolist() == [1, 0]


def _per_env_infos(self, infos, env_infos, ids):
    """The reference: gymnasium's ``_add_info`` called env by env (what the vector env did before batching it)."""
    for i, info in zip(ids, env_infos):
        infos = self._add_info(infos, info, i)
    return infos


def _assert_same_infos(got: dict, want: dict, where: str = "info") -> None:
    assert list(got) == list(want), where
    for key, w in want.items():
        g = got[key]
        if isinstance(w, dict):
            _assert_same_infos(g, w, f"{where}[{key!r}]")
            continue
        assert g.dtype == w.dtype and g.shape == w.shape, (where, key, g.dtype, w.dtype, g.shape, w.shape)
        if w.dtype != object:
            np.testing.assert_array_equal(g, w, err_msg=f"{where}[{key!r}]")
            continue
        for a, b in zip(g, w):
            assert type(a) is type(b), (where, key, type(a), type(b))
            if isinstance(b, np.ndarray):
                np.testing.assert_array_equal(a, b)
            elif key != "timings":  # wall-clock times differ between the two runs
                assert a == b, (where, key, a, b)


@pytest.mark.parametrize("autoreset_mode", ["next_step", "same_step"])
def test_batched_infos_equal_gymnasiums_env_by_env(model, monkeypatch, autoreset_mode):
    """Infos are built for the whole batch at once (gymnasium's ``_add_info`` per env took 45 ms a step at 256 envs):
    the same keys, arrays, dtypes and masks as env by env, with envs resetting and stepping in one call."""
    def run() -> list[dict]:
        venv = WorldModelVectorEnv(num_envs=3, model=model, autoreset_mode=autoreset_mode,
                                   **{**OPTS, "max_episode_steps": 2})
        infos = [venv.reset(seed=3)[1]]
        venv.step(np.array([0, 1, 2]))
        infos.append(venv.reset(options={"reset_mask": np.array([False, True, False])})[1])
        for a in ACTIONS:  # env 1 now ends a step after envs 0 and 2: resets and steps share calls
            infos.append(venv.step(a[:3])[4])
        return infos

    got, batched = run(), WorldModelVectorEnv._add_infos
    monkeypatch.setattr(WorldModelVectorEnv, "_add_infos", _per_env_infos)
    want = run()
    assert any("_final_obs" in i or "_start_index" in i and "_frames" in i for i in want[2:])  # mixed calls happened
    for k, (g, w) in enumerate(zip(got, want)):
        _assert_same_infos(g, w, f"call {k}")
    venv = WorldModelVectorEnv(num_envs=3, model=model, **OPTS)  # keys already there: assigned into, masks kept
    rows = [{"a": 1.5, "b": "x"}, {"a": 2.5, "c": np.ones(2, np.uint8)}, {"plan": ("p", "q")}, {"plan": ("r", "s")}]
    merged = [batched(venv, batched(venv, {}, rows[:1], [0]), rows[1:], [2, 0, 1]),  # a tuple stays one object
              _per_env_infos(venv, _per_env_infos(venv, {}, rows[:1], [0]), rows[1:], [2, 0, 1])]
    _assert_same_infos(*merged)
    # frames leave the decoder contiguous (numpy copied the default's channel-strided view 4x slower), whatever
    # memory format the VAE's output has (the micro VAE's happens to be channels-last already; the default's is not)
    monkeypatch.setattr(model.vae, "decode", lambda z: SimpleNamespace(sample=torch.zeros(len(z), 3, 8, 8)))
    assert model.decode_latents(torch.zeros(1, model.config.latent_channels, 2, 4, 4)).is_contiguous()


def test_sb3_vec_env_adapter_runs_ppo(model):
    from stable_baselines3 import PPO

    venv = SB3VecEnv(num_envs=2, model=model, **{**OPTS, "max_episode_steps": 3, "denoise_steps": 1})
    venv.seed(4)
    obs = venv.reset()
    assert obs.shape == (2, 16, 16, 3)
    for k in range(3):
        obs, rewards, dones, infos = venv.step(np.array([k % 3, 1]))
    assert dones.all() and all("terminal_observation" in i and i["TimeLimit.truncated"] for i in infos)
    assert venv.venv.batch.step_counts.tolist() == [0, 0]  # reset in the same step, SB3-style
    agent = PPO("MlpPolicy", venv, n_steps=4, batch_size=8, n_epochs=1, seed=0, device="cpu")
    before = [p.detach().clone() for p in agent.policy.parameters()]
    agent.learn(total_timesteps=8)
    assert agent.num_timesteps == 8  # 4 steps of 2 envs went through the adapter
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))  # PPO updated
    venv.close()

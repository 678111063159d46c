"""SlowFastVGen-v0 (single env): API checks, determinism, bad actions, video, bounded memory over 1,000 steps."""

from __future__ import annotations

import gc
import json
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import psutil
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers SlowFastVGen-v0)
from envs.episodes import write_episodes
from envs.world_model_env import SkillText, WorldModelEnv
from envs.synthetic import SYNTHETIC_SKILLS, panning_episode
from worldmodel.config import TempLoRAConfig, WorldModelConfig
from worldmodel.diffusion import make_sampler, sample_new_frames
from worldmodel.heads import HeadsConfig, RewardHeads
from worldmodel.model import SlowFastVGen




@pytest.fixture(scope="module")
def model(micro_model):
    return micro_model()


def make(model, **kw) -> WorldModelEnv:
    opts = dict(model=model, skills=SYNTHETIC_SKILLS, denoise_steps=1, max_episode_steps=20)
    opts.update(kw)
    return WorldModelEnv(**opts)


def sb3_check_env(env, skip_nan_check: bool = False) -> None:
    import stable_baselines3.common.env_checker as sb3_checker

    original = sb3_checker._check_nan
    if skip_nan_check:  # SB3's VecCheckNan calls np.isnan on the actions: impossible for Text actions
        sb3_checker._check_nan = lambda env: None
    try:
        sb3_checker.check_env(env, warn=True)
    finally:
        sb3_checker._check_nan = original


@pytest.mark.parametrize("mode", ["skill", "text", "continuous"])
def test_gymnasium_and_sb3_check_env(model, mode):
    env = make(model, action_mode=mode)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*minimal resolution.*")  # 16x16 frames < NatureCNN's 36x36
        check_env(env, skip_render_check=True)
        sb3_check_env(env, skip_nan_check=mode == "text")
    if mode == "skill":
        assert env.action_space == gym.spaces.Discrete(3)
    elif mode == "text":
        assert isinstance(env.action_space, SkillText) and env.action_space.sample() in SYNTHETIC_SKILLS
    else:
        assert env.action_space.shape == (2, 5) and env.action_space.dtype == np.float32
    assert env.observation_space == gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)


def test_registered_make_with_tiny_preset():
    env = gym.make("SlowFastVGen-v0", model="tiny", skills=SYNTHETIC_SKILLS, denoise_steps=1, temp_lora=False)
    obs, info = env.reset(seed=3)
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8 and info["start_source"] == "synthetic"
    obs, reward, terminated, truncated, info = env.step(1)
    assert info["frames"].shape == (2, 32, 32, 3) and np.array_equal(obs, info["frames"][-1])
    assert reward == 0.0 and not terminated and not truncated  # no heads: reward 0, never terminates
    assert info["fast_loss"] is None and info["skill"] == "pan right" and info["timings"].total > 0
    env.close()


def test_default_model_missing_says_how_to_restore(monkeypatch, tmp_path):
    import worldmodel.loading as loading

    monkeypatch.setattr(loading, "DEFAULT_MODEL_DIR", tmp_path / "weights" / "default")
    with pytest.raises(FileNotFoundError, match="git checkout worldmodel/weights"):
        gym.make("SlowFastVGen-v0")
    with pytest.raises(FileNotFoundError, match="neither a preset"):
        WorldModelEnv(model=str(tmp_path / "nope"))


def test_seeded_episodes_repeat_and_memory_learns(model):
    def run(seed):
        env = make(model, action_mode="text")
        obs, info = env.reset(seed=seed)
        frames, losses = [obs], []
        for skill in ["pan left", "Pan  Right", "stay"]:
            obs, _, _, _, info = env.step(skill)
            frames.append(obs)
            losses.append(info["fast_loss"])
        theta = env.memory.theta.detach().clone()
        learned_b = [env.memory.factors(0, k)[1] for k in range(len(env.memory.layout))]
        assert any(b.any() for b in learned_b), "Θ never written: the fast steps changed nothing"
        env.reset(seed=seed)  # reset frees the episode: Θ back to its initial draw, B = 0
        b_parts = [env.memory.factors(0, k)[1] for k in range(len(env.memory.layout))]
        assert all(not b.any() for b in b_parts) and len(env.memory.history[0]) == 0
        return np.stack(frames), losses, theta

    f1, l1, t1 = run(7)
    f2, l2, t2 = run(7)
    f3, _, _ = run(8)
    assert np.array_equal(f1, f2) and l1 == l2 and torch.equal(t1, t2)
    assert not np.array_equal(f1, f3)
    assert all(np.isfinite(v) for v in l1)


def test_a_named_fast_rule_is_the_measured_one_over_the_models_config(model):
    """``temp_lora="recall"`` (`worldmodel.config.TEMP_LORA_RULES`): the env's memory runs the rule over the model's own
    config; over the shipped default's it is exactly the config `evaluate --mode recall` measured on seed 419 (session
    66's JSON), so the name cannot drift from its numbers. A wrong name is a clear error."""
    env = make(model, temp_lora="recall")
    env.reset(seed=0)
    assert env.memory.config == model.config.temp_lora.with_rule("recall")
    assert (env.memory.config.write, env.memory.config.event_slots) == ("events", 4)
    assert env.memory.config.blocks == model.config.temp_lora.blocks  # the model's own where the rule says nothing
    with pytest.raises(ValueError, match="recall"):
        make(model, temp_lora="recal")
    with pytest.raises(ValueError, match="unknown Temp-LoRA rule 'recal'"):
        model.config.temp_lora.with_rule("recal")
    root = Path(__file__).resolve().parents[1]
    shipped = WorldModelConfig.load(root / "worldmodel" / "weights" / "default" / "config.json").temp_lora
    run = json.loads((root / "docs" / "results" / "memory_events_s66_h100" / "seed419_recall_px.json").read_text())
    measured = TempLoRAConfig(**run["variants"]["full"]["temp_lora"])
    assert shipped.with_rule("recall") == measured and shipped != measured


def test_bad_actions_raise_clear_errors(model):
    skill = make(model, action_mode="skill")
    skill.reset(seed=0)
    for bad, err, msg in [(3, ValueError, "out of range"), (-1, ValueError, "out of range"),
                          (1.0, TypeError, "integer"), ("stay", TypeError, "integer"), (True, TypeError, "integer"),
                          (np.array([0, 1]), ValueError, "single integer"), (np.float32(1), TypeError, "integer")]:
        with pytest.raises(err, match=msg):
            skill.step(bad)
    assert skill.batch.step_counts[0] == 0  # a rejected action changes nothing
    skill.step(np.int64(2))

    text = make(model, action_mode="text")
    text.reset(seed=0)
    with pytest.raises(ValueError, match="(?s)unknown skill 'fly'.*pan left"):
        text.step("fly")
    with pytest.raises(TypeError, match="str"):
        text.step(0)

    cont = make(model, action_mode="continuous")
    cont.reset(seed=0)
    good = np.zeros((2, 5), np.float32)
    for bad, err, msg in [(np.zeros(3, np.float32), ValueError, "shape"), (np.zeros((2, 4)), ValueError, "shape"),
                          (good.astype(str), TypeError, "dtype"), (good.astype(bool), TypeError, "dtype"),
                          (np.full((2, 5), np.nan, np.float32), ValueError, "NaN"),
                          (np.full(5, np.inf), ValueError, "NaN or inf"), (good + 1.5, ValueError, "out of range"),
                          ("left", TypeError, "float array")]:
        with pytest.raises(err, match=msg):
            cont.step(bad)
    cont.step(np.full(5, 0.5))  # (action_dim,) is held for the chunk
    with pytest.raises(RuntimeError, match="reset"):
        make(model).step(0)
    with pytest.raises(ValueError, match="action_mode"):
        make(model, action_mode="joystick")
    with pytest.raises(TypeError, match="unknown SlowFastVGen-v0 options"):
        make(model, colour="red")
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        make(model, precision="fp16")
    with pytest.raises(ValueError, match="cpu_threads must be"):
        make(model, cpu_threads=0)


def test_observation_modes_and_start_frames(model, tmp_path):
    ep = panning_episode(5, ["pan right"], frame_size=16, chunk_len=2)
    path = tmp_path / "eps.h5"
    write_episodes(path, {"episode_0000000": ep})
    env = make(model, observation="stack", frame_stack=3, start_frames=path)
    obs, info = env.reset(seed=0)
    assert obs.shape == (3, 16, 16, 3) and info["start_source"] == str(path)
    assert all(np.array_equal(o, ep["frames"][0]) for o in obs)  # padded with the first real frame
    obs, *_ = env.step(0)
    assert obs.shape == (3, 16, 16, 3)
    chunk = make(model, observation="chunk")
    obs, _ = chunk.reset(seed=0, options={"start_frames": ep["frames"][:3], "instruction": "look around"})
    assert obs.shape == (2, 16, 16, 3) and np.array_equal(obs, ep["frames"][1:3])
    obs, _, _, _, info = chunk.step(1)
    assert np.array_equal(obs, info["frames"])
    obs, info = chunk.reset(seed=0, options={"episode": path, "episode_key": "episode_0000000"})
    assert np.array_equal(obs[-1], ep["frames"][0])
    with pytest.raises(ValueError, match="16x16"):
        make(model, start_frames=np.zeros((1, 32, 32, 3), np.uint8))


def test_record_video_writes_mp4(model, tmp_path):
    env = make(model, render_mode="rgb_array_list", max_episode_steps=3)
    env = gym.wrappers.RecordVideo(env, str(tmp_path / "videos"), episode_trigger=lambda e: True,
                                   disable_logger=True)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    env.close()
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0


def test_heads_give_reward_and_termination(model):
    heads = RewardHeads(HeadsConfig(frame_size=16, channels=(8,), text_dim=16, hidden=8))
    with torch.no_grad():
        heads.mlp[-1].bias.copy_(torch.tensor([0.0, 5.0, 5.0, 0.5]))  # success and termination logits >> 0
        heads.reward_mean.fill_(-2.0)
    env = make(model, heads=heads, instruction="pan to the red disc")
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(0)
    expected = heads.predict(info["frames"][None], ["pan to the red disc"])
    assert reward == pytest.approx(float(expected["reward"][0]))
    assert terminated and not truncated and info["success"] and info["success_prob"] > 0.99
    assert info["skills_to_go"] == pytest.approx(float(expected["to_go"][0]))  # the heads' skills still needed


def test_heads_that_read_history_judge_each_chunk_on_the_episode_so_far(model):
    """The env feeds heads with ``history`` the start frame and the earlier chunks' ends (max-pooled), not the chunk
    alone; a fork carries the history (the fork's next chunk is judged as the source's would be)."""
    torch.manual_seed(0)
    heads = RewardHeads(HeadsConfig(frame_size=16, channels=(8,), text_dim=16, hidden=8, history=True))
    env = make(model, heads=heads, instruction="pan to the red disc")
    obs, _ = env.reset(seed=0)
    _, _, _, _, first = env.step(0)
    _, reward, _, _, second = env.step(1)
    text = ["pan to the red disc"]
    with torch.no_grad():
        seen = torch.maximum(heads.encode_history(obs[None]), heads.encode_history(first["frames"][-1:]))
    expected = heads.predict(second["frames"][None], text, seen)
    assert reward == pytest.approx(float(expected["reward"][0]), rel=1e-5)
    alone = heads.predict(second["frames"][None], text, heads.encode_history(obs[None]).detach())
    assert reward != pytest.approx(float(alone["reward"][0]), rel=1e-5)  # the first chunk's end counts
    env.close()


def test_model_folder_ships_vocabulary_start_frames_and_heads(model, tmp_path):
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    starts = np.stack([panning_episode(s, ["stay"], frame_size=16, chunk_len=1)["frames"][:1] for s in range(3)])
    np.savez(folder / "start_frames.npz", frames=starts, skills=np.array(["stay", "pan left"]),
             tasks=np.array(["play", "task1_open", "play"]))
    RewardHeads(HeadsConfig(frame_size=16, channels=(4,), text_dim=8, hidden=4)).save_pretrained(folder / "heads")
    env = WorldModelEnv(model=str(folder), task="task1_open", denoise_steps=1)
    assert env.skills == ("stay", "pan left") and env.batch.heads is not None
    obs, info = env.reset(seed=0)
    assert info["start_index"] == 1 and np.array_equal(obs, starts[1, -1])  # the task's own start frame
    assert info["instruction"] == "open the drawer and the window" and info["plan"]
    _, reward, _, _, info = env.step(1)
    assert info["skill"] == "pan left" and isinstance(reward, float) and "success_prob" in info
    # the model loaded from the folder and given as an instance finds the same start frames, skills and heads
    # (PPO's imagined episodes had started from synthetic frames so, session 26)
    loaded = SlowFastVGen.from_pretrained(folder)
    env = WorldModelEnv(model=loaded, task="task1_open", denoise_steps=1)
    assert env.skills == ("stay", "pan left") and env.batch.heads is not None
    obs, info = env.reset(seed=0)
    assert info["start_index"] == 1 and np.array_equal(obs, starts[1, -1])


def test_sampling_with_given_noise_matches_sample_new_frames(model):
    """The model's sampler (a copy of a cached template, noise given per env) equals a fresh one."""
    ctx = torch.randn(2, 4, 2, 8, 8)
    action = {"vector": torch.zeros(2, 2, 5)}
    cond = model.encode_action(action, 2)
    noise = torch.randn(2, 4, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    model.generate_latents(ctx, action, steps=1, guidance_scale=1.0, noise=noise)  # the template's first use
    ours = model.generate_latents(ctx, action, steps=2, guidance_scale=1.0, noise=noise)
    with torch.no_grad():
        ref = sample_new_frames(model.unet, make_sampler(model.config, model.scheduler), ctx, 2, cond, 2,
                                generator=torch.Generator().manual_seed(1))
    assert torch.equal(ours, ref)


def test_thousand_step_episode_keeps_memory_bounded(micro_model):
    """1,000 chunks with Temp-LoRA (full_sequence: the variant that keeps a history) on an 8x8 model.

    Bound: RSS grows < 16 MiB between step 100 and step 1,000 (measured: ~1 MiB), and the tensors
    the episode holds stay constant (history capped at max_history chunks). reset() frees them.
    Θ learns every 4th chunk (250 fast updates, every chunk still enters the history): the fast update
    was 60% of the test's time, and 225 updates between the two readings show a leak per update as well.
    """
    # one UNet block (no attention up)
    model = micro_model(frame_size=8, blocks=(16,), temp_lora=dict(rank=2, alpha=2.0, variant="full_sequence",
                                                                   blocks=(), update_every=4))
    env = WorldModelEnv(model=model, action_mode="continuous", denoise_steps=1, max_episode_steps=1000,
                          continuous_shape="frame")
    proc = psutil.Process()
    env.reset(seed=0)
    fresh = env.episode_nbytes()
    action = np.zeros(5, np.float32)
    rss = {}
    for k in range(1, 1001):
        _, _, terminated, truncated, info = env.step(action)
        if k in (100, 1000):
            gc.collect()
            rss[k] = proc.memory_info().rss
            held = env.episode_nbytes()
        assert not terminated and truncated == (k == 1000)
    assert info["step"] == 1000 and np.isfinite(info["fast_loss"])
    growth = (rss[1000] - rss[100]) / 2**20
    assert growth < 16, f"RSS grew {growth:.1f} MiB over 900 steps"
    assert len(env.memory.history[0]) == model.config.temp_lora.max_history
    assert held == fresh + model.config.temp_lora.max_history * 4 * 2 * 4 * 4 * 4  # 16 chunks of (4, 2, 4, 4) f32
    env.reset(seed=1)
    assert env.episode_nbytes() == fresh and len(env.memory.history[0]) == 0


def test_compile_options_compile_the_shared_model_in_place(model, monkeypatch):
    """``compile`` / ``compile_decoder`` compile the UNet / the VAE's decoder of the shared model (recorded here, not
    run: `test_compiled_unet_gives_the_same_chunks_and_memories` runs both graphs); neither by default."""
    calls = []
    monkeypatch.setattr(SlowFastVGen, "compile_unet", lambda self: calls.append("unet"))
    monkeypatch.setattr(SlowFastVGen, "compile_decoder", lambda self: calls.append("decoder"))
    opts = dict(model=model, skills=SYNTHETIC_SKILLS, denoise_steps=1)
    WorldModelEnv(**opts)
    assert calls == []
    WorldModelEnv(**opts, compile_decoder=True)
    assert calls == ["decoder"]
    WorldModelEnv(**opts, compile=True, compile_decoder=True)
    assert calls == ["decoder", "unet", "decoder"]

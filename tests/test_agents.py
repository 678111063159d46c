"""Agents (issue 17): PPO through the batched world-model env and in the real scene; the planner's forked
candidates, its choice under known heads, its memory of real chunks; baselines; instruction messages; the
two entry points on a micro model."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.planning import PlannerConfig, WorldModelPlanner, make_agent
from agents.ppo import ObservationSpec, PPOConfig, RealTaskEnv, check_reward, evaluate_in_real_scene, \
    imagined_vec_env, real_vec_env, run_policy_in_real_scene, train_ppo
from agents.real_scene import SceneSpec, UnknownInstruction, check_instruction, check_tasks, make_scene, \
    run_real_episode, run_real_episodes, task_for_instruction
from envs.real.skills import SKILLS
from envs.real.tasks import get_task
from worldmodel import BatchedTempLoRA, Imagination
from worldmodel.heads import HeadsConfig, RewardHeads, instruction_features

FAST_LORA = dict(rank=2, alpha=4.0, lr=1e-2)
SCENE = SceneSpec(chunk_len=2, frame_skip=4, max_chunks=2)  # the micro model makes 2 frames per chunk
TASKS = ["task1_open", "task4_put_in_drawer"]


@pytest.fixture(scope="module")
def model(micro_model):
    return micro_model(temp_lora=FAST_LORA)


@pytest.fixture(scope="module")
def heads():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return RewardHeads(HeadsConfig(frame_size=16, channels=(4,), text_dim=8, hidden=8))


@pytest.fixture(scope="module")
def scene():
    env = make_scene(SCENE, 16)
    yield env
    env.close()


@pytest.fixture(scope="module")
def scene2():
    env = make_scene(SCENE, 16)
    yield env
    env.close()


def _start(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------ PPO
def test_ppo_trains_in_imagination_and_runs_in_the_real_scene(model, heads, scene, tmp_path):
    env = imagined_vec_env(model, heads, TASKS, num_envs=8, max_chunks=4, seed=0, denoise_steps=1, temp_lora=False,
                           start_frames=np.concatenate([_start(0), _start(1)]))
    spec = ObservationSpec(16, 4)
    obs = env.reset()
    wm = env.venv.wm  # VecMonitor -> ImaginedTaskVecEnv -> its WorldModelVectorEnv
    instructions = list(wm.batch.instructions)
    assert {get_task(t).build(np.random.default_rng(0)).instruction for t in TASKS} == set(instructions)  # both drawn
    np.testing.assert_allclose(obs["instruction"], instruction_features(instructions, spec.instruction_dim).numpy())
    assert (obs["state"] == spec.state(0, None)).all()
    actions = np.arange(8) % len(SKILLS)
    obs, rewards, dones, infos = env.step(actions)
    assert not dones.any() and (obs["state"] == np.stack([spec.state(1, a) for a in actions])).all()
    expected = heads.predict(np.stack([i["frames"] for i in infos]), instructions)["reward"]
    np.testing.assert_allclose(rewards, expected, rtol=1e-5)  # the heads' rewards reach PPO

    snapshot = {}

    from stable_baselines3.common.callbacks import BaseCallback

    class Before(BaseCallback):
        def _on_training_start(self) -> None:
            snapshot.update({k: v.detach().clone() for k, v in self.model.policy.state_dict().items()})

        def _on_step(self) -> bool:
            return True

    agent = train_ppo(env, PPOConfig(total_timesteps=256, n_steps=16, batch_size=64, n_epochs=2, device="cpu",
                                     tensorboard_log=str(tmp_path / "tb")), callback=Before())
    assert agent.num_timesteps == 256  # 32 batched steps of 8 imagined envs
    after = agent.policy.state_dict()
    changed = [k for k in snapshot if not torch.equal(snapshot[k], after[k])]
    assert any(k.startswith("features_extractor.cnn") for k in changed) and any("action_net" in k for k in changed)
    episodes = list(agent.ep_info_buffer)
    assert len(episodes) >= 8 and all(1 <= e["l"] <= 4 for e in episodes)  # episodes end by the cap or the heads
    assert list((tmp_path / "tb").glob("*/events.out.tfevents.*"))  # TensorBoard log
    env.close()

    # The policy plays a real episode; the success rate is that episode's outcome.
    [result] = run_policy_in_real_scene(agent, "task1_open", [3], SCENE, [scene], keep_frames=True)
    assert result.chunks == 2 or result.success
    assert result.real_frames.shape == (1 + 2 * result.chunks, 16, 16, 3)
    first = agent.predict(spec.build(result.real_frames[0], result.instruction, 0, None), deterministic=True)[0]
    assert result.skills[0] == int(first)  # the policy's own choice on the real reset frame
    if result.chunks == 2:  # then on the first chunk's last frame, one chunk in, after that skill
        second = agent.predict(spec.build(result.real_frames[2], result.instruction, 1, result.skills[0]),
                               deterministic=True)[0]
        assert result.skills[1] == int(second)
    report = evaluate_in_real_scene(agent, ["task1_open"], [3], SCENE)  # its own scene: the same episode
    assert report["success"] == float(result.success) and report["per_task"]["task1_open"]["n"] == 1
    [episode] = report["per_task"]["task1_open"]["episodes"]
    assert episode["skills"] == result.skills and episode["seed"] == 3


class RecordingPolicy:
    """Stands in for a trained PPO: records what it is shown and answers skill = chunk index + 3."""

    agent_spec = dict(frame_size=16, max_chunks=4, num_skills=len(SKILLS), instruction_dim=16)

    def __init__(self):
        self.seen: list[dict] = []

    def predict(self, obs, deterministic=False):
        self.seen.append({k: v.copy() for k, v in obs.items()})
        return obs["state"][:, :5].argmax(axis=1) + 3, None


def test_policy_in_the_real_scene_sees_each_chunk_as_in_training(scene):
    policy = RecordingPolicy()
    [result] = run_policy_in_real_scene(policy, "task4_put_in_drawer", [2], SCENE, [scene], keep_frames=True)
    spec = ObservationSpec(**RecordingPolicy.agent_spec)
    assert result.skills == [3, 4] and len(policy.seen) == 2  # two chunks (SCENE's budget), one decision each
    for k, obs in enumerate(policy.seen):  # the reset frame, then the last frame of each real chunk
        want = spec.build(result.real_frames[2 * k], result.instruction, k, result.skills[k - 1] if k else None)
        assert all(np.array_equal(obs[key][0], want[key]) for key in want), k


def test_a_policys_skill_runs_on_until_the_success_head_sees_it_done():
    """`PolicyAgent(skill_chunks=3)`: the chosen skill repeats while the success head says its chunk is not done (at most
    3 chunks), without asking the policy; the policy's next observation counts every chunk."""
    from agents.ppo import PolicyAgent

    class SuccessAt:  # the success head: done on the given chunk numbers of the run (1-based over the episode)
        def __init__(self, done_chunks):
            self.done_chunks, self.calls = set(done_chunks), 0

        def predict(self, frames, instructions):
            self.calls += 1
            return {"success": np.array([1.0 if self.calls in self.done_chunks else 0.0])}

    policy, frame = RecordingPolicy(), np.zeros((16, 16, 3), np.uint8)
    agent = PolicyAgent(policy, ObservationSpec(**RecordingPolicy.agent_spec), heads=SuccessAt({2, 5}), skill_chunks=3)
    agent.reset_episode(0, frame, {"instruction": "open the drawer"})
    played = []
    for _ in range(6):
        [skill] = agent.act_batch([0])
        played.append(skill)
        agent.observe_batch([0], [skill], [np.zeros((2, 16, 16, 3), np.uint8)], [{}])
    # asked at chunk 0 (skill 3: done on its 2nd chunk), at chunk 2 (skill 5: 3 chunks, the cap), at chunk 5 (skill 7:
    # the one-hot chunk index stops at max_chunks, 4)
    assert played == [3, 3, 5, 5, 5, 7] and len(policy.seen) == 3
    assert [obs["state"][0, :5].argmax() for obs in policy.seen[:2]] == [0, 2]
    plain = PolicyAgent(RecordingPolicy(), ObservationSpec(**RecordingPolicy.agent_spec))
    assert plain.runs.max_chunks == 1
    with pytest.raises(ValueError, match="needs reward heads"):
        PolicyAgent(policy, ObservationSpec(**RecordingPolicy.agent_spec), skill_chunks=3)


def test_ppo_baseline_in_the_real_scene_counts_env_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # SB3's default logger left a folder there per run
    env = real_vec_env(["task1_open"], 16, num_envs=1, max_chunks=2, scene=SCENE, seed=0)
    obs = env.reset()
    assert obs["image"].shape == (1, 16, 16, 3) and obs["image"].any()  # a rendered real frame
    agent = train_ppo(env, PPOConfig(total_timesteps=4, n_steps=4, batch_size=4, n_epochs=1, device="cpu"))
    assert agent.num_timesteps == 4 and agent.agent_spec["frame_size"] == 16
    assert [e["l"] for e in agent.ep_info_buffer] == [2, 2]  # two real episodes, cut at max_chunks
    assert not list(tmp_path.iterdir())
    env.close()


def test_ppo_can_learn_from_skills_to_go_in_both_worlds(model, heads):
    """``reward="to_go"``: minus the skills the task still needs, from the heads' to_go output in imagination and from
    the simulator's state in the real scene (session 29: PPO never learnt task 4's stand-in from the scene's reward,
    and did from skills to go). Guards: the option ignored in either world (the scene's or the heads' reward)."""
    env = imagined_vec_env(model, heads, ["task4_put_in_drawer"], num_envs=2, max_chunks=4, seed=0, denoise_steps=1,
                           temp_lora=False, start_frames=_start(0), reward="to_go")
    env.reset()
    instructions = list(env.venv.wm.batch.instructions)
    _, rewards, _, infos = env.step(np.array([4, 3]))
    predicted = heads.predict(np.stack([i["frames"] for i in infos]), instructions)
    np.testing.assert_allclose(rewards, -predicted["to_go"], rtol=1e-5)
    assert not np.allclose(rewards, predicted["reward"])
    env.close()

    real = RealTaskEnv(["task4_put_in_drawer"], 16, 4, SCENE, reward="to_go")
    scene_reward = RealTaskEnv(["task4_put_in_drawer"], 16, 4, SCENE)
    try:
        for env in (real, scene_reward):
            env.reset(seed=0)
        # "close the window" changes nothing task 4 needs: still the plan's 4 skills (unlock, open, cube in, close)
        _, reward, _, _, info = real.step(3)
        assert reward == -4.0 and info["skills_to_go"] == 4
        assert scene_reward.step(3)[1] != -4.0 and "skills_to_go" not in scene_reward.step(3)[4]
    finally:
        real.close(), scene_reward.close()
    with pytest.raises(ValueError, match="give the skills to go.*'play'"):
        real_vec_env(["play"], 16, num_envs=1, max_chunks=2, scene=SCENE, reward="to_go")
    with pytest.raises(ValueError, match="unknown reward"):
        check_reward("parts", ["task1_open"])


class ConstantRewardEnv(gym.Env):
    """A blank frame, reward -30 every chunk, 4 chunks an episode: a reward scale far from 1."""

    obs_spec = ObservationSpec(16, 4)
    observation_space, action_space = obs_spec.space(), gym.spaces.Discrete(len(SKILLS))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        return self.obs_spec.build(np.zeros((16, 16, 3), np.uint8), "open the drawer", 0, None), {}

    def step(self, action):
        self.steps += 1
        obs = self.obs_spec.build(np.zeros((16, 16, 3), np.uint8), "open the drawer", self.steps, int(action))
        return obs, -30.0, False, self.steps >= 4, {}


def test_ppo_learns_from_rewards_scaled_by_the_return_and_logs_them_raw(tmp_path):
    """PPO's rollouts hold the rewards divided by a running std of the discounted return (the reward's scale must not
    decide whether PPO learns: session 27), the logged episode returns are the env's own, and a resumed run goes on
    from the saved return scale. Guards: the scaling dropped, its statistics not saved or not put back."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    def run(total, normalize=True, resume=None):
        env = VecMonitor(DummyVecEnv([ConstantRewardEnv] * 2))
        cfg = PPOConfig(total_timesteps=total, n_steps=8, batch_size=16, n_epochs=1, device="cpu",
                        normalize_reward=normalize)
        return train_ppo(env, cfg, resume=resume)

    agent = run(16)
    rewards = agent.rollout_buffer.rewards
    assert np.all(rewards < 0) and np.all(np.abs(rewards[1:]) < 3)  # scaled (the first step: clipped at 10), not -30
    assert {e["r"] for e in agent.ep_info_buffer} == {-120.0}  # logged as the env gave them
    count = agent.return_rms.count
    agent.save(tmp_path / "ppo.zip")
    resumed = run(32, resume=tmp_path / "ppo.zip")
    assert resumed.num_timesteps == 32 and resumed.return_rms.count == pytest.approx(count + 16)
    raw = run(16, normalize=False).rollout_buffer.rewards
    assert np.abs(raw + 30).max() < 1  # the env's own (a cut episode's last step adds gamma * its value)


def test_ppo_anneals_its_learning_rate_and_stops_an_update_at_target_kl():
    """``anneal_lr``: the learning rate falls linearly to 0 over total_timesteps (the last update's is 0, not the
    configured one); ``target_kl``: an update's epochs stop once the policy moved that far (session 29's task-4
    stand-in: late updates undid a learnt policy). Guards: either option not passed on to SB3."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    def run(**options):
        env = VecMonitor(DummyVecEnv([ConstantRewardEnv] * 2))
        cfg = PPOConfig(total_timesteps=32, n_steps=8, batch_size=4, n_epochs=4, device="cpu", seed=0, **options)
        return train_ppo(env, cfg)

    plain, annealed = run(), run(anneal_lr=True)
    assert plain.policy.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)
    assert annealed.policy.optimizer.param_groups[0]["lr"] == pytest.approx(0.0)
    assert annealed.lr_schedule(0.5) == pytest.approx(1.5e-4)
    assert plain._n_updates == 2 * 4  # two rollouts, four epochs each
    assert run(target_kl=1e-12)._n_updates == 2  # each update stops after its first epoch

# -------------------------------------------------------------------------------------------- planner
def test_forked_candidates_start_from_the_belief_state(model, heads):
    planner = WorldModelPlanner(model, heads, PlannerConfig(candidates=4, horizon=2, denoise_steps=2))
    instruction = "open the drawer and the window"
    real = np.random.default_rng(5).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    planner.start(_start(), instruction, seed=7)
    planner.observe(0, real)  # the belief learns a real chunk first: Θ and context now differ from a reset
    theta = planner.core.memory.theta
    assert theta[0].abs().sum() > 0 and not torch.equal(theta[0], theta[1])
    imagined = planner.imagine(np.tile([3, 5], (4, 1)), keep_frames=True)
    assert all(torch.equal(theta[k], theta[0]) for k in range(1, 5))  # forked Θ (no learning in imagination)
    frames = imagined.frames
    assert frames.shape == (4, 2, 2, 16, 16, 3)
    assert all(np.array_equal(frames[k], frames[0]) for k in range(4))  # identical branches
    assert np.allclose(imagined.reward, imagined.reward[0])
    assert planner.core.precision == "fp32"
    assert WorldModelPlanner(model, heads, PlannerConfig(candidates=1, precision="bf16")).core.precision == "bf16"

    # The same as one episode imagined on its own: reset, learn the real chunk, then the two skills.
    core = Imagination(model, 1, BatchedTempLoRA(model, 1), denoise_steps=2)
    core.reset([0], [_start()], seeds=[7])
    core.step([0], {"text": [SKILLS[0]]}, teacher_frames=real[None])
    for h, skill in enumerate((3, 5)):
        alone = core.step([0], {"text": [SKILLS[skill]]}, learn=False).frames[0].numpy()
        diff = np.abs(alone.astype(int) - frames[0, h])
        assert diff.max() <= 2 and diff.mean() < 0.05, (h, diff.max())


class TargetHeads:
    """Heads that see the task done exactly when a chunk shows ``target`` (and nothing else rewarded)."""

    def __init__(self, target: np.ndarray):
        self.target = torch.as_tensor(target).float()

    def predict(self, frames, instructions):
        diff = (torch.as_tensor(frames).float() - self.target).abs().mean(dim=(1, 2, 3, 4)).numpy()
        zeros = np.zeros(len(diff), np.float32)
        return {"reward": zeros, "success": zeros, "terminated": (diff < 0.1).astype(np.float32)}


@pytest.mark.parametrize("method", ["shooting", "cem"])
def test_planner_picks_the_skill_the_heads_reward(model, heads, method):
    instruction = "open the drawer and the window"
    probe = WorldModelPlanner(model, heads, PlannerConfig(method="shooting", horizon=1, candidates=10, denoise_steps=2))
    probe.start(_start(), instruction, seed=3)
    chunks = probe.imagine(np.arange(10)[:, None], keep_frames=True).frames[:, 0]  # each skill's first chunk
    gaps = np.abs(chunks[:, None].astype(float) - chunks[None]).mean(axis=(2, 3, 4, 5))
    assert gaps[~np.eye(10, dtype=bool)].min() > 0.2  # the skills' chunks differ: the target names one skill
    for target in (7, 2):
        cfg = (PlannerConfig(method="shooting", horizon=1, candidates=16, denoise_steps=2) if method == "shooting"
               else PlannerConfig(method="cem", horizon=2, candidates=12, iterations=3, elites=3, denoise_steps=2))
        planner = WorldModelPlanner(model, TargetHeads(chunks[target]), cfg)
        planner.start(_start(), instruction, seed=3)  # the same start and seed: candidates reproduce the probe
        [result] = planner.plan()
        assert result.sequence[0] == target and result.feasible and result.done_prob > 0.99, (target, result)
        assert result.batches == cfg.horizon * (cfg.iterations if method == "cem" else 1)  # one batch per chunk
        assert result.evaluated == (10 if method == "shooting" else 12 * 3)  # shooting: all 10 skills, no more
        if method == "cem":  # the distribution of the first skill has moved onto the target
            assert planner.distributions[0][0].argmax() == target and planner.distributions[0][0, target] > 0.5


def test_planner_repeats_a_skill_until_the_success_head_sees_it_done(model, heads):
    class Judge:  # the heads, with the success head's verdict on every chunk set by the test
        def __init__(self, success: float):
            self.success, self.calls = success, 0

        def predict(self, frames, texts):
            self.calls += 1
            out = heads.predict(frames, texts)
            return {**out, "success": np.full(len(texts), self.success, np.float32)}

    real = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)  # a real chunk of 2 frames
    for success, plans in ((0.0, 2), (1.0, 5)):
        judge = Judge(success)
        planner = WorldModelPlanner(model, judge, PlannerConfig(method="shooting", horizon=1, candidates=4,
                                                                denoise_steps=1, skill_chunks=3))
        planner.start(_start(), "open the drawer", seed=0)
        skills = []
        for _ in range(5):
            skills.append(planner.act())
            planner.observe(skills[-1], real)
        assert len(planner.plans[0]) == plans, (success, skills)
        if success == 0.0:  # never judged done: each chosen skill runs its 3 chunks, then a new plan
            assert skills[0] == skills[1] == skills[2] == planner.plans[0][0].sequence[0]
            assert skills[3] == skills[4] == planner.plans[0][1].sequence[0]
    with pytest.raises(ValueError, match="skill_chunks"):
        PlannerConfig(skill_chunks=0)


def test_planner_imagines_each_skill_for_imagine_chunks_chunks(model, heads):
    """With imagine_chunks = 2 a candidate [3, 5] is imagined as the chunks [3, 3, 5, 5], judged chunk by chunk."""
    runs = {}
    for repeat, seqs in ((2, [[3, 5]]), (1, [[3, 3, 5, 5]])):
        planner = WorldModelPlanner(model, heads, PlannerConfig(method="shooting", horizon=len(seqs[0]), candidates=1,
                                                                denoise_steps=2, imagine_chunks=repeat))
        planner.start(_start(), "open the drawer", seed=4)
        runs[repeat] = planner.imagine(seqs, keep_frames=True)
    two, one = runs[2], runs[1]
    assert two.sequences.tolist() == [[3, 5]] and two.reward.shape == (1, 4) and two.frames.shape[:2] == (1, 4)
    assert two.to_go.shape == (1, 4)  # the heads' skills to go, judged on every chunk too
    np.testing.assert_array_equal(two.frames, one.frames)
    np.testing.assert_allclose(two.terminated, one.terminated, atol=1e-6)
    with pytest.raises(ValueError, match="imagine_chunks"):
        PlannerConfig(imagine_chunks=0)


def test_skills_to_go_let_the_planner_see_past_a_dip_in_the_reward(model, heads):
    """Two plans: A opens the drawer that must end shut (reward -1, one skill nearer the goal each chunk), B moves
    nothing (reward 0, 3 skills to go throughout). The reward alone prefers B; with the skills to go, A."""
    from agents.planning import Imagined

    zeros = np.zeros((2, 2), np.float32)
    imagined = Imagined(np.array([[0, 0], [7, 7]]), reward=np.array([[-1, -1], [0, 0]], np.float32), success=zeros,
                        terminated=zeros, to_go=np.array([[2, 1], [3, 3]], np.float32))
    scores = {w: WorldModelPlanner(model, heads, PlannerConfig(value_weight=w)).score(imagined)[0] for w in (0, 2)}
    assert scores[0][1] > scores[0][0] and scores[2][0] > scores[2][1]
    without = Imagined(imagined.sequences, imagined.reward, zeros, zeros)  # heads without a to_go output
    np.testing.assert_array_equal(WorldModelPlanner(model, heads, PlannerConfig()).score(without)[0], scores[0])



class PriorHeads:
    """The fixture heads with a next-skill prior ``p`` (10 skills) on every frame stack."""

    def __init__(self, heads, p: np.ndarray):
        self.heads, self.p, self.calls = heads, np.asarray(p, np.float32), 0
        self.config = dataclasses.replace(heads.config, skills=len(p), num_frames=1)

    def predict(self, frames, texts):
        self.calls += 1
        return {**self.heads.predict(frames, texts), "next_skill": np.tile(self.p, (len(texts), 1))}


def test_the_skill_prior_steers_the_planner_and_plays_alone(model, heads):
    """With ``prior_weight`` each skill of a sequence scores its log-prior (the first from the real frames, the others
    from the imagined chunk before them): a prior on skill 7 makes CEM choose it, and its first distribution starts
    there. Without the weight the prior is not read. `SkillPriorAgent` plays the prior's skill without imagining."""
    from agents.planning import SkillPriorAgent

    p = np.full(10, 0.02, np.float32)
    p[7] = 0.82
    prior = PriorHeads(heads, p)
    cfg = PlannerConfig(method="cem", horizon=2, candidates=8, iterations=1, elites=2, denoise_steps=1,
                        imagine_chunks=2, prior_weight=1.0)
    planner = WorldModelPlanner(model, prior, cfg)
    planner.start(_start(), "open the drawer", seed=2)
    seqs = np.array([[7, 3], [1, 7]])
    imagined = planner.imagine(seqs)
    np.testing.assert_allclose(imagined.skill_logp, np.log(p[seqs]), rtol=1e-5)  # each skill's own prior
    [result] = planner.plan()
    assert result.sequence[0] == 7 and planner.distributions[0][0].argmax() == 7
    off = WorldModelPlanner(model, prior, dataclasses.replace(cfg, prior_weight=0.0))
    off.start(_start(), "open the drawer", seed=2)
    assert off.imagine(seqs).skill_logp is None
    agent = SkillPriorAgent(prior)
    agent.reset_episode(0, _start()[0], {"instruction": "open the drawer"})
    assert agent.act_batch([0]) == [7]
    # episodes at different stages side by side: one at its start frame, one after a real chunk (2 frames each)
    two = dataclasses.replace(prior.config, num_frames=2)
    prior.config = two
    real = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    agent = SkillPriorAgent(prior, num_episodes=2)
    for b in (0, 1):
        agent.reset_episode(b, _start(b)[0], {"instruction": "open the drawer"})
    agent.observe_batch([1], [7], [real], [{}])
    assert agent.act_batch([0, 1]) == [7, 7]
    both = WorldModelPlanner(model, prior, dataclasses.replace(cfg, iterations=1), num_episodes=2)
    for b in (0, 1):
        both.start(_start(b), "open the drawer", seed=b, episode=b)
    both.observe_batch([1], [7], [real])
    assert [r.sequence[0] for r in both.plan([0, 1])] == [7, 7]
    with pytest.raises(ValueError, match="next-skill output"):
        SkillPriorAgent(heads)

def test_the_prior_agent_runs_a_skill_on_until_the_success_head_sees_it_done(heads):
    """With ``skill_chunks`` 3 the skill-prior agent asks its prior only when the success head judges the last real
    chunk done, or after 3 chunks of one skill (`SkillRuns`); with 1 it asks after every chunk."""
    from agents.planning import SkillPriorAgent

    class Judge(PriorHeads):
        success = 0.0

        def predict(self, frames, texts):
            return {**super().predict(frames, texts), "success": np.full(len(texts), self.success, np.float32)}

    p = np.full(10, 0.02, np.float32)
    p[7] = 0.82
    real = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    for success, chunks, expected in ((0.0, 3, [1, 0, 0, 1, 0, 0, 1]), (1.0, 3, [1] * 7), (0.0, 1, [1] * 7)):
        judge = Judge(heads, p)
        judge.success = success
        agent = SkillPriorAgent(judge, skill_chunks=chunks)
        agent.reset_episode(0, _start()[0], {"instruction": "open the drawer"})
        asked = []
        for _ in range(7):
            calls = judge.calls
            skill = agent.act_batch([0])[0]
            asked.append(int(judge.calls > calls))
            agent.observe_batch([0], [skill], [real], [{}])
            assert skill == 7
        assert asked == expected, (success, chunks, asked)
        assert len(agent.notes[0]) == sum(expected) and agent.notes[0][0].startswith("decision 0: skill 7 P 0.82")
        agent.reset_episode(0, _start()[0], {"instruction": "open the drawer"})  # a new episode asks afresh
        calls = judge.calls
        agent.act_batch([0])
        assert judge.calls == calls + 1


def test_planner_in_the_real_scene_remembers_real_chunks(model, heads, scene, scene2):
    cfg = PlannerConfig(method="cem", horizon=2, candidates=6, iterations=2, elites=2, denoise_steps=1)
    planner = WorldModelPlanner(model, heads, cfg, num_episodes=2)
    results = run_real_episodes(planner, [scene, scene2], [("task1_open", 0), ("memory_drawer", 1)],
                                SCENE, keep_frames=True)
    for b, r in enumerate(results):
        assert r.chunks == 2 or r.success
        assert [p.sequence[0] for p in planner.plans[b]] == r.skills  # the first skill of each plan ran
        assert r.imagined_frames.shape == r.real_frames[1:].shape
        # The belief env learned the real chunks (Θ moved off its reset value) and its context is the real frames.
        with torch.no_grad():
            real = model.encode_frames(torch.from_numpy(r.real_frames[-2:][None]))
        torch.testing.assert_close(planner.core.context[planner.root(b)], real[0], atol=1e-5, rtol=1e-4)
    theta = planner.core.memory.theta
    assert theta[planner.root(0)].abs().sum() > 0 and not torch.equal(theta[planner.root(0)], theta[planner.root(1)])
    both = planner.imagine([[[4]], [[4]]], episodes=[0, 1], keep_frames=True).frames  # one batch, two beliefs
    assert both.shape == (2, 1, 1, 2, 16, 16, 3) and not np.array_equal(both[0], both[1])
    # The recorded imagined chunk is what a candidate imagined for the executed skill before the real chunk came.
    again = WorldModelPlanner(model, heads, cfg)
    frame, info = scene.reset(seed=0, options={"task": "task1_open"})
    again.reset(frame, info)
    skill = again.act()
    predicted = again.imagine([[skill, 0]], keep_frames=True).frames[0, 0]
    _, _, _, _, step = scene.step(skill)
    again.observe(skill, step["frames"])
    assert np.abs(again.last_imagined[0].astype(int) - predicted).max() <= 2

    no_memory = make_agent("planner_no_memory", model, heads, cfg)
    assert no_memory.core.memory is None
    r = run_real_episode(no_memory, scene, "task1_open", 0, SCENE)
    assert r.chunks == 2 or r.success


def test_planner_feeds_heads_that_read_history_the_episode_so_far(model, scene):
    """History heads in the planner: the belief env's history holds the start frame and each real chunk's end, and
    every candidate is judged on that history (forked) and its own imagined chunks."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        heads = RewardHeads(HeadsConfig(frame_size=16, channels=(4,), text_dim=8, hidden=8, history=True,
                                        skills=len(SKILLS)))
    planner = WorldModelPlanner(model, heads, PlannerConfig(method="shooting", horizon=2, candidates=4,
                                                            denoise_steps=1))
    frame, info = scene.reset(seed=0, options={"task": "task1_open"})
    planner.reset(frame, info)
    skill = planner.act()
    _, _, _, _, step = scene.step(skill)
    planner.observe(skill, step["frames"])
    with torch.no_grad():
        past = torch.maximum(heads.encode_history(frame[None]), heads.encode_history(step["frames"][-1:]))
    torch.testing.assert_close(planner.seen.pooled_of([planner.root(0)]), past)
    imagined = planner.imagine([[3, 5]], keep_frames=True)
    first, second = imagined.frames[0, 0], imagined.frames[0, 1]
    want = [heads.predict(first[None], [info["instruction"]], past)["terminated"][0]]
    with torch.no_grad():
        after = torch.maximum(past, heads.encode_history(first[-1:]))
    want.append(heads.predict(second[None], [info["instruction"]], after)["terminated"][0])
    np.testing.assert_allclose(imagined.terminated[0], want, rtol=1e-5)


def test_skill_prior_agent_reads_its_prior_on_the_real_episode_before_the_frames():
    """`SkillPriorAgent` with history heads: after chunks A and B the prior judges B's frames on the start frame and A's
    end (B's own end joins once the next chunk comes), as the heads learnt."""
    from agents.planning import SkillPriorAgent

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        heads = RewardHeads(HeadsConfig(frame_size=16, channels=(4,), text_dim=8, hidden=8, history=True,
                                        skills=len(SKILLS)))
    rng = np.random.default_rng(5)
    start, a, b = (rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((16, 16, 3), (2, 16, 16, 3),
                                                                               (2, 16, 16, 3)))
    agent = SkillPriorAgent(heads)
    agent.reset_episode(0, start, {"instruction": "open the drawer"})
    for chunk in (a, b):
        [skill] = agent.act_batch([0])
        agent.observe_batch([0], [skill], [chunk], [{}])
    with torch.no_grad():
        past = torch.maximum(heads.encode_history(start[None]), heads.encode_history(a[-1:]))
    torch.testing.assert_close(agent.seen.pooled_of([0]), past)
    want = heads.predict(b[None], ["open the drawer"], past)["next_skill"][0].argmax()
    assert agent.act_batch([0]) == [want]


def test_baselines_follow_the_plan_or_draw_skills(scene, scene2):
    plan = get_task("task4_put_in_drawer").build(np.random.default_rng(0)).plan
    expert = run_real_episode(make_agent("expert"), scene, "task4_put_in_drawer", 0, SCENE)
    assert expert.skills[0] == plan[0] and expert.chunks == 2
    # the simulator's skills still needed, at the reset and after each chunk: the plan's length, then never more
    assert len(expert.to_go) == 3 and expert.to_go[0] == len(plan) and expert.to_go[2] <= expert.to_go[1] <= len(plan)
    # Two slots, three episodes: a slot takes the next episode when its own ends; each random episode is
    # seeded by its scene seed, whichever slot plays it.
    jobs = [("task1_open", 5), ("task2_unlock_and_lock", 6), ("task1_open", 5)]
    rand = run_real_episodes(make_agent("random", num_episodes=2, seed=1), [scene, scene2], jobs, SCENE)
    assert [(r.task, r.seed, r.chunks) for r in rand] == [(t, s, 2) for t, s in jobs]
    assert rand[0].skills == rand[2].skills != rand[1].skills and all(0 <= s < len(SKILLS) for s in rand[0].skills)
    import time

    assert run_real_episodes(make_agent("random"), [scene], jobs, SCENE, deadline=time.time()) == [None] * 3


def _states(**fields) -> dict:
    """A chunk's step info whose one kept frame has these simulator fields (others at the start scene's)."""
    from envs.real.objects import SIM_STATE_FIELDS

    state = dict(cube_x=0.35, cube_y=0.05, cube_z=0.02, drawer=0.0, window=0.0, left_button=1, right_button=1,
                 cube_in_drawer=0)
    state.update(fields)
    return {"sim_states": np.array([[state[f] for f in SIM_STATE_FIELDS]], np.float32), "sim_state": None}


def test_memory_tasks_succeed_only_after_their_memory_part():
    from agents.real_scene import SuccessJudge

    start = {"sim_state": _states()["sim_states"][0]}
    # memory_cube_return's goal is its start scene (the cube in the middle): met at once, but the cube has to go to
    # the slot its instruction names first, and come back.
    named = dict(start, instruction="put the cube on the left of the table, open and close the drawer and the window, "
                                    "then put the cube back where it was")
    judge = SuccessJudge("memory_cube_return", named)
    assert not judge.update(True, _states())
    assert not judge.update(False, _states(cube_y=0.15, cube_x=0.4))  # moved, but to the right slot
    assert not judge.update(True, _states())
    assert not judge.update(False, _states(cube_y=-0.05, cube_x=0.4))  # to the left slot, as named
    assert judge.update(True, _states())
    with pytest.raises(ValueError, match="not a memory_cube_return instruction"):
        SuccessJudge("memory_cube_return", dict(start, instruction="put the cube on the moon"))
    # The drawer tasks' goal (drawer open, cube inside) holds as soon as the cube is put in: it counts only
    # after the cube lay hidden in the closed drawer (and, for the locked task, the drawer was locked over it).
    judge = SuccessJudge("memory_drawer", start)
    assert not judge.update(True, _states(drawer=-0.16, cube_in_drawer=1))
    assert not judge.update(False, _states(drawer=0.0, cube_in_drawer=1))
    assert judge.update(True, _states(drawer=-0.16, cube_in_drawer=1))
    locked = SuccessJudge("memory_drawer_locked", start)
    for info in (_states(drawer=0.0, cube_in_drawer=1), _states(drawer=-0.16, cube_in_drawer=1)):
        assert not locked.update(True, info)  # hidden but never locked
    locked.update(False, _states(drawer=0.0, cube_in_drawer=1, left_button=0))
    assert locked.update(True, _states(drawer=-0.16, cube_in_drawer=1))
    assert SuccessJudge("task1_open", start).update(True, _states())  # other tasks: the goal check itself


def test_unknown_or_impossible_instructions_get_a_message(model, scene, tmp_path, capsys):
    with pytest.raises(UnknownInstruction, match="'moon'"):
        check_instruction("fly to the moon")
    with pytest.raises(UnknownInstruction, match="unknown task 'task9'"):
        check_tasks(["task9"])
    with pytest.raises(UnknownInstruction, match="no task of the real scene"):
        task_for_instruction("close the window and open the drawer")  # known words, but no task says it
    assert task_for_instruction("Open the drawer and the  window") == "task1_open"
    planner = WorldModelPlanner(model, TargetHeads(np.zeros((2, 16, 16, 3))), PlannerConfig(
        horizon=1, candidates=4, iterations=1, elites=1, denoise_steps=1, give_up_after=1))
    with pytest.raises(UnknownInstruction, match="moon"):
        planner.start(_start(), "put the cube on the moon")
    # Heads that never see the goal: the planner says no plan reaches it and stops, no crash.
    r = run_real_episode(planner, scene, "task1_open", 0, SCENE)
    assert r.chunks == 0 and not r.success and r.stop.startswith("gave up: no sequence of 1 skills")

    from experiments.plan_eval import main

    assert main(["--instruction", "fly to the moon", "--out", str(tmp_path)]) == 2
    assert main(["--tasks", "play"]) == 2
    err = capsys.readouterr().err
    assert "error: cannot follow 'fly to the moon'" in err and "'play' has no goal" in err
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "--candidates" in capsys.readouterr().out


# ------------------------------------------------------------------------------------- entry points
@pytest.fixture(scope="module")
def saved(model, heads, tmp_path_factory):
    path = tmp_path_factory.mktemp("agents")
    model.save_pretrained(path / "model")
    heads.save_pretrained(path / "heads")
    return path


def test_plan_eval_writes_table_plot_and_videos(saved, tmp_path, capsys):
    from experiments.plan_eval import main

    out = tmp_path / "out"
    args = ["--model", str(saved / "model"), "--heads", str(saved / "heads"), "--tasks", "task1_open", "--seeds", "1",
            "--max-chunks", "1", "--agents", "planner,expert", "--candidates", "4", "--horizon", "1", "--iterations",
            "1", "--elites", "1", "--denoise-steps", "1", "--videos", "1", "--device", "cpu", "--no-progress",
            "--out", str(out)]
    assert main([*args, "--time-limit-min", "0"]) == 0  # out of time before the first episode
    assert "Partial: 0 of 2 episodes" in (out / "plan_eval.md").read_text()
    capsys.readouterr()
    assert main(args) == 0  # the same command again plays what is missing
    assert "planner task1_open seed 1000: " in capsys.readouterr().out  # --no-progress: a line per episode
    assert main(args) == 0 and len((out / "episodes.jsonl").read_text().splitlines()) == 2  # nothing twice
    with pytest.raises(SystemExit, match="other settings"):
        main([*args, "--horizon", "2"])
    with pytest.raises(SystemExit, match="next-skill output"):  # the saved heads have no prior
        main([*args, "--agents", "prior"])
    result = json.loads((out / "plan_eval.json").read_text())
    assert result["complete"] and "Partial" not in (out / "plan_eval.md").read_text()
    [planned] = result["episodes"]["planner"]
    assert planned["chunks"] == 1 and result["summary"]["expert"]["task1_open"]["n"] == 1
    table = (out / "plan_eval.md").read_text()
    assert "| task1_open |" in table and "scripted expert" in table and "--candidates 4" in table
    assert (out / "plan_eval.png").stat().st_size > 0 and (out / planned["video"]).stat().st_size > 0


def test_plan_eval_pairs_the_planners_seed_by_seed():
    """Issue 17's memory goal compares the planner with and without Temp-LoRA on the same scenes: the table counts
    seeds won by one of them only, matched by seed (not by the order episodes finished in)."""
    from experiments.plan_eval import markdown, memory_pairs

    def ep(agent, task, seed, success):
        return {"agent": agent, "task": task, "seed": seed, "success": success, "chunks": 3, "seconds": 1.0}

    with_ = [ep("planner", "memory_drawer", s, w) for s, w in ((5, True), (3, True), (4, False))]
    without = [ep("planner_no_memory", "memory_drawer", s, w) for s, w in ((3, False), (4, True), (5, True), (6, True))]
    result = {"settings": {"agents": ["planner", "planner_no_memory"], "tasks": ["memory_drawer"]},
              "episodes": {"planner": with_, "planner_no_memory": without}}
    assert memory_pairs(result, "memory_drawer") == dict(seeds=3, both=1, with_only=[3], without_only=[4])
    assert memory_pairs(result, "task1_open") is None  # not played
    assert memory_pairs({**result, "settings": {"agents": ["planner", "expert"]}}, "memory_drawer") is None
    summary = {a: {"memory_drawer": {"n": 3, "success": 0.5, "chunks": 3.0}} for a in ("planner", "planner_no_memory")}
    settings = {**result["settings"], "heads": {}, "parallel": 1, "seeds": 3, "first_seed": 3,
                "planner": {"method": "cem", "horizon": 2, "candidates": 4, "iterations": 1, "elites": 1,
                            "denoise_steps": 2}, "scene": {"max_chunks": None, "chunk_len": 4, "frame_skip": 8},
                "model": "m"}
    table = markdown({**result, "settings": settings, "summary": summary, "command": "c", "machine": "m", "date": "d",
                      "agent_seconds": {"planner": 1, "planner_no_memory": 1}, "complete": True})
    assert "| memory_drawer | 3 | 1 | 1 [3] | 1 [4] |" in table


def test_resolved_heads_are_named_from_the_working_directory(heads, tmp_path, monkeypatch):
    """Results record where their heads came from as a reader can reproduce it (`worldmodel/weights/default/heads`
    for the shipped model's), not as this machine's absolute path; a folder outside the working directory stays
    as it is."""
    from agents.heads import resolve_heads

    heads.save_pretrained(tmp_path / "work" / "model" / "heads")
    monkeypatch.chdir(tmp_path / "work")
    _, info = resolve_heads(None, tmp_path / "work" / "model", None, None, 16)
    assert info["source"] == "model/heads"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    _, info = resolve_heads(None, tmp_path / "work" / "model", None, None, 16)
    assert info["source"] == str(tmp_path / "work" / "model" / "heads")


def test_train_agent_in_imagination_then_real_scene(saved, tmp_path):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    import experiments
    from experiments.train_agent import run

    from envs.episodes import write_episodes
    from envs.synthetic import random_episodes

    # A stand-in for the fixed real dataset: 10 recorded episodes labelled as task1_open (the reward heads are
    # fitted on it, one episode held out; its first frames are where imagined episodes start).
    episodes = random_episodes(10, 3, seed=0, frame_size=16, chunk_len=2)
    instruction = get_task("task1_open").build(np.random.default_rng(0)).instruction
    for i, ep in enumerate(episodes):
        ep["attrs"].update(task="task1_open", instruction=instruction, task_success=bool(i % 2))
    write_episodes(tmp_path / "data.h5", {f"episode_{i:03d}": ep for i, ep in enumerate(episodes)})
    overrides = [f"model={saved / 'model'}", f"data={tmp_path / 'data.h5'}", "heads_fit_steps=20",
                 f"out_dir={tmp_path}", "device=cpu", "max_chunks=2", "imagination.num_envs=2",
                 "imagination.denoise_steps=1", "real_baseline.enabled=false", "ppo.total_timesteps=8", "ppo.n_steps=4",
                 "ppo.batch_size=8", "ppo.n_epochs=1", "eval.seeds=1", "eval.parallel=1", "progress=false"]
    with initialize_config_dir(str(Path(experiments.__file__).parent / "conf"), version_base="1.3"):
        stopped = compose("train_agent", overrides=[*overrides, "time_limit_min=0"])
        cfg = compose("train_agent", overrides=overrides)
    first = run(stopped, ["test"])["agents"]["imagination"]  # out of time after the first batched step
    assert first["env_steps"] == 2 and first["real"] is None and "time limit" in (tmp_path / "train_agent.md").read_text()
    assert first["real_at_time_limit"]["per_task"]["task1_open"]["n"] == 1  # evaluated as it stood
    record = run(cfg, ["test"])  # the same command again continues that policy to the total
    agent = record["agents"]["imagination"]
    assert agent["env_steps"] == 2 + 8 and agent["real_env_steps_while_learning"] == 0  # + whole rollouts of 4 x 2
    assert agent["real"]["per_task"]["task1_open"]["n"] == 1
    assert (tmp_path / "imagination_ppo.zip").is_file() and "| PPO in imagination" in (tmp_path / "train_agent.md").read_text()
    with zipfile.ZipFile(tmp_path / "imagination_ppo.zip") as saved_policy:  # no path of this machine in it
        assert not any(str(tmp_path).encode() in saved_policy.read(name) for name in saved_policy.namelist())
    assert record["heads"]["source"].startswith("fitted on") and record["heads"]["heldout_chunks"] == 3
    assert (tmp_path / "heads" / "heads.json").is_file() and (tmp_path / "heads" / "fit.json").is_file()
    with np.load(tmp_path / "start_frames.npz") as starts:
        assert starts["tasks"].tolist() == ["task1_open"] * 10
        assert np.array_equal(starts["frames"][:, 0], np.stack([ep["frames"][0] for ep in episodes]))


def test_eval_agent_plays_saved_policies_as_the_direct_calls_do(model, heads, saved, tmp_path):
    """`experiments.eval_agent`: each saved policy with each skill-run setting gives exactly the episodes of
    `run_policy_in_real_scene` on the same seeds; with heads that never see a skill done, skill runs of 2 chunks play
    each chosen skill twice; bad input stops before any episode."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from stable_baselines3 import PPO

    import experiments
    from experiments.eval_agent import run

    env = imagined_vec_env(model, heads, ["task1_open"], num_envs=2, max_chunks=2, seed=0, denoise_steps=1,
                           temp_lora=False, start_frames=_start(0))
    train_ppo(env, PPOConfig(total_timesteps=4, n_steps=2, batch_size=4, n_epochs=1, device="cpu")).save(
        tmp_path / "policy.zip")
    env.close()
    never = RewardHeads.from_pretrained(saved / "heads")
    with torch.no_grad():
        never.mlp[-1].bias[1] = -50.0  # the success logit: no chunk is ever judged done
    never.save_pretrained(tmp_path / "never_done")
    overrides = [f"policies=[{tmp_path / 'policy.zip'}]", "tasks=[task1_open]", f"model={saved / 'model'}",
                 f"heads={tmp_path / 'never_done'}", "skill_chunks=[1,2]", "seeds=3", "parallel=2", "device=cpu",
                 "scene.frame_skip=4", f"out_dir={tmp_path / 'out'}", "progress=false", "videos=1"]
    conf = str(Path(experiments.__file__).parent / "conf")
    with initialize_config_dir(conf, version_base="1.3"):
        record = run(compose("eval_agent", overrides=overrides), ["test"])
        bad = [compose("eval_agent", overrides=[*overrides, change]) for change in
               ("policies=[missing.zip]", "skill_chunks=[0]", "policies=[]")]
    assert [(r["skill_chunks"], r["per_task"]["task1_open"]["n"]) for r in record["rows"]] == [(1, 3), (2, 3)]
    policy = PPO.load(tmp_path / "policy.zip", device="cpu")
    for row, judge in zip(record["rows"], (None, never)):
        direct = run_policy_in_real_scene(policy, "task1_open", [1000, 1001, 1002], SCENE, heads=judge,
                                          skill_chunks=row["skill_chunks"])
        assert [e["skills"] for e in row["per_task"]["task1_open"]["episodes"]] == [r.skills for r in direct]
        assert row["success"] == np.mean([r.success for r in direct])
    runs = [e["skills"] for e in record["rows"][1]["per_task"]["task1_open"]["episodes"]]
    assert all(len(s) == 1 or s[0] == s[1] for s in runs)  # one skill run of two chunks (unless done in one)
    for row in record["rows"]:  # the first seed's episode as a video, per policy and setting
        [video] = row["videos"]
        assert video.endswith("task1_open_seed1000.mp4") and (tmp_path / "out" / video).stat().st_size > 0
    saved_record = json.loads((tmp_path / "out" / "eval_agent.json").read_text())
    assert len(saved_record["rows"]) == 2 and "| 2 |" in (tmp_path / "out" / "eval_agent.md").read_text()
    for cfg, message in zip(bad, ("no policy at", "skill_chunks must", "no policies")):
        with pytest.raises(SystemExit, match=message):
            run(cfg, ["test"])


def test_fit_heads_ships_heads_in_the_model_folder(saved, tmp_path, capsys):
    """`experiments.fit_heads` writes heads/ + fit.json into the model folder, where the env finds them."""
    import shutil

    from envs.episodes import write_episodes
    from envs.synthetic import random_episodes
    from envs.world_model_env.assets import resolve_heads
    from experiments.fit_heads import main

    folder = tmp_path / "model"
    shutil.copytree(saved / "model", folder)
    episodes = random_episodes(10, 3, seed=1, frame_size=16, chunk_len=2)
    for i, ep in enumerate(episodes):
        ep["attrs"].update(task="task1_open", task_success=bool(i % 2))
    write_episodes(tmp_path / "data.h5", {f"episode_{i:03d}": ep for i, ep in enumerate(episodes)})
    info = main(["--model", str(folder), "--data", str(tmp_path / "data.h5"), "--steps", "5", "--device", "cpu"])
    assert info["heldout_chunks"] == 3 and 0.0 <= info["success_accuracy"] <= 1.0  # 1 of 10 episodes held out
    assert "heads: 100%" in capsys.readouterr().err  # a progress bar over the steps (a CPU fit takes minutes)
    assert json.loads((folder / "heads" / "fit.json").read_text())["train_chunks"] == info["train_chunks"] == 27
    assert isinstance(resolve_heads(None, folder, torch.device("cpu")), RewardHeads)
    before = RewardHeads.from_pretrained(folder / "heads").state_dict()
    main(["--model", str(folder), "--data", str(tmp_path / "data.h5"), "--steps", "1", "--lr", "0", "--device", "cpu",
          "--continue"])  # lr 0: continued heads keep the weights they had, fresh ones would not
    after = RewardHeads.from_pretrained(folder / "heads").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "reward_" not in k)
    judged = main(["--model", str(folder), "--data", str(tmp_path / "data.h5"), "--judge"])
    assert judged["heldout_chunks"] == 30 and judged["train_chunks"] == 0  # every episode, nothing fitted
    judged = main(["--model", str(folder), "--data", str(tmp_path / "data.h5"), "--judge", "--heldout", "0.5"])
    assert judged["heldout_chunks"] == 15  # the held-out half only
    both = main(["--model", str(folder), "--data", str(tmp_path / "data.h5"), "--steps", "1", "--device", "cpu",
                 "--imagined-steps", "1"])
    assert both["train_chunks"] == 2 * 27 and both["heldout_chunks"] == 3  # + imagined copies; judged on real
    assert "hindsight_false_done" in both["imagined"]
    with pytest.raises(SystemExit, match="not a model folder"):
        main(["--model", str(tmp_path), "--data", str(tmp_path / "data.h5")])


def test_imagined_episodes_are_the_models_teacher_forced_chunks(model):
    """Each chunk generated from the real frames before it; the first frame and every label stay the real ones."""
    from evaluation.rollout import imagined_episodes
    from envs.synthetic import random_episodes

    real = random_episodes(3, 3, seed=2, frame_size=16, chunk_len=model.config.new_frames)
    fake = imagined_episodes(model, real, denoise_steps=1, batch=2)
    assert len(fake) == 3
    for r, f in zip(real, fake):
        assert f["frames"].shape == r["frames"].shape and f["frames"].dtype == np.uint8
        np.testing.assert_array_equal(f["frames"][0], r["frames"][0])
        assert np.abs(f["frames"][1:].astype(float) - r["frames"][1:]).mean() > 5  # the model's, not the real ones
        assert f["reward"] is r["reward"] and f["attrs"] is r["attrs"]
    again = imagined_episodes(model, real[:1], denoise_steps=1)  # seeded: the same chunks again
    np.testing.assert_array_equal(again[0]["frames"], fake[0]["frames"])
    # free: the first chunk as the teacher's (both from the real first frame), the next ones from the model's own
    free = imagined_episodes(model, real[:1], denoise_steps=1, mode="free")[0]["frames"]
    tn = model.config.new_frames
    np.testing.assert_array_equal(free[:1 + tn], fake[0]["frames"][:1 + tn])
    assert np.abs(free[1 + tn:].astype(float) - fake[0]["frames"][1 + tn:]).mean() > 1
    with pytest.raises(ValueError, match="'teacher' or 'free'"):
        imagined_episodes(model, real[:1], mode="recall")
    with pytest.raises(ValueError, match="frames per chunk"):
        imagined_episodes(model, random_episodes(1, 2, seed=0, frame_size=16, chunk_len=3))


def test_plan_diag_ranks_every_sequence_from_a_real_start(saved, tmp_path):
    from experiments.plan_diag import main

    out, sheet = tmp_path / "diag.json", tmp_path / "diag.png"
    result = main(["--model", str(saved / "model"), "--heads", str(saved / "heads"), "--task", "task1_open",
                   "--seed", "0", "--horizon", "1", "--denoise-steps", "1", "--top", "2", "--samples", "2",
                   "--frame-skip", "4", "--device", "cpu", "--sheet", str(sheet), "--out", str(out)])
    assert json.loads(out.read_text())["shown"] == result["shown"] and result["sequences"] == len(SKILLS)
    rows = result["shown"]
    assert [r["rank"] for r in rows[:2]] == [1, 2] and rows[0]["score"] >= rows[1]["score"]
    assert sum(r["expert"] for r in rows) == 1  # the expert's first skill is always shown
    assert all(len(r["p_done_per_seed"]) == 2 and len(r["terminated"]) == 1 for r in rows)
    assert sheet.stat().st_size > 0
    after = main(["--model", str(saved / "model"), "--heads", str(saved / "heads"), "--task", "task1_open", "--seed",
                  "0", "--horizon", "1", "--after", "1", "--denoise-steps", "1", "--frame-skip", "4", "--device", "cpu",
                  "--out", str(out)])  # from the real scene after the expert's first skill: its second is marked
    assert after["after"] == ["open the drawer"]
    assert [r["sequence"] for r in after["shown"] if r["expert"]] == [["open the window"]]


def test_plan_eval_video_without_moviepy_is_a_png_sheet(tmp_path, monkeypatch):
    """The GPU machine has no moviepy: an episode's video becomes a PNG sheet instead of ending the evaluation
    (session 7's plan_eval stopped with ModuleNotFoundError after its first planner episode)."""
    import sys
    from types import SimpleNamespace

    from experiments.plan_eval import write_video

    monkeypatch.setitem(sys.modules, "moviepy", None)  # import moviepy raises ImportError
    rng = np.random.default_rng(0)
    r = SimpleNamespace(real_frames=rng.integers(0, 255, (9, 16, 16, 3), dtype=np.uint8),
                        imagined_frames=rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8), chunks=2,
                        skills=[0, 2], instruction="open the drawer and the window", task="task1_open", seed=1000,
                        success=True, stop="success")
    video = write_video(tmp_path / "videos", "planner", r)
    assert video == "videos/task1_open_seed1000_planner.png" and (tmp_path / video).stat().st_size > 0

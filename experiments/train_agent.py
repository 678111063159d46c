"""Model-based RL: PPO trained in the learned simulator, judged in the real scene, beside PPO trained there.

    python -m experiments.train_agent                                  # shipped default model, task1_open
    python -m experiments.train_agent model=runs/small/model data=data/scene 'tasks=[task1_open,task4_put_in_drawer]' \
        ppo.total_timesteps=20000 device=cuda out_dir=runs/agent
    python -m experiments.train_agent real_baseline.enabled=false      # imagination only

1. The world model (``model``, learned from the fixed real dataset ``data``) and its reward heads (its
   ``heads/``, or fitted on ``data``: recorded episodes only).
2. PPO (`agents.ppo`) in imagination: ``imagination.num_envs`` imagined episodes in one batch
   (`SlowFastVGen-v0`, skill actions), rewards and termination from the heads, starting from real start
   frames of the tasks. No real-scene step is taken while it learns.
3. The policy in the real scene: success rate per task over ``eval.seeds`` seeds.
4. The same PPO trained in the real scene (true reward) for the same number of env steps, evaluated alike.

``reward``: ``scene`` (OGBench's reward; in imagination the heads' prediction of it) or ``to_go`` (minus the skills the
task still needs after each chunk; in imagination the heads' to_go output), the same kind in both worlds. A task whose
scene reward gets worse on the way to the goal (task 4: the drawer opens before the cube goes in) needs ``to_go``.

Writes ``out_dir/train_agent.md`` and ``.json`` (both agents side by side: env steps, training
wall-clock, real success per task; the command, machine and date), the policies
(``imagination_ppo.zip``, ``real_ppo.zip``) and TensorBoard logs (``out_dir/tb``). With
``time_limit_min`` training stops in time and the policy is saved; rerunning the same command continues
it (and skips an agent already trained and evaluated), so a run can be split over several calls.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from agents.real_scene import SceneSpec, UnknownInstruction, check_tasks

MAX_STARTS_PER_TASK = 64


def start_frames_from_data(data: str, tasks: list[str], frame_size: int, out: Path) -> Path | None:
    """First frames of the dataset's episodes of ``tasks`` (up to 64 each), as a start set with task names."""
    from agents.heads import iter_episodes

    frames, names = [], []
    counts = {t: 0 for t in tasks}
    for ep in iter_episodes(data):
        task = str(ep["attrs"].get("task", ""))
        if task in counts and counts[task] < MAX_STARTS_PER_TASK:
            first = np.asarray(ep["frames"][:1])
            if first.shape[1:3] != (frame_size, frame_size):
                raise ValueError(f"{data} holds {first.shape[1]}x{first.shape[2]} frames but the model makes "
                                 f"{frame_size}x{frame_size} ones")
            frames.append(first)
            names.append(task)
            counts[task] += 1
        if all(c >= MAX_STARTS_PER_TASK for c in counts.values()):
            break
    if not frames:
        return None
    path = out / "start_frames.npz"
    np.savez_compressed(path, frames=np.stack(frames).astype(np.uint8), tasks=np.asarray(names))
    return path


def evaluate(policy, tasks: list[str], cfg: DictConfig, scene: SceneSpec, progress: bool, heads=None) -> dict:
    from agents.ppo import evaluate_in_real_scene

    return evaluate_in_real_scene(policy, tasks, range(cfg.eval.first_seed, cfg.eval.first_seed + cfg.eval.seeds),
                                  scene, cfg.eval.parallel, cfg.eval.deterministic, heads=heads,
                                  skill_chunks=cfg.eval.skill_chunks, progress=progress)


def run(cfg: DictConfig, argv: list[str] | None = None) -> dict:
    from stable_baselines3.common.utils import set_random_seed

    from agents.heads import resolve_heads
    from agents.ppo import PPOConfig, check_reward, imagined_vec_env, real_vec_env, train_ppo
    from evaluation.run_info import command_line, jsonable, machine_name, resolve_device, utc_date
    from worldmodel.loading import load_model

    tasks = check_tasks(list(cfg.tasks))
    check_reward(cfg.reward, tasks)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    set_random_seed(cfg.seed)
    model, folder = load_model(cfg.model, device)
    mc = model.config
    scene = SceneSpec(chunk_len=mc.new_frames, max_chunks=cfg.max_chunks,
                      **OmegaConf.to_container(cfg.scene, resolve=True))
    base = {k: v for k, v in OmegaConf.to_container(cfg.ppo, resolve=True).items()}
    record: dict = dict(
        command=command_line("experiments.train_agent", argv), machine=machine_name(device), date=utc_date(),
        settings=dict(model=str(cfg.model), data=cfg.data, heads=cfg.heads, tasks=tasks, max_chunks=cfg.max_chunks,
                      reward=cfg.reward, seed=cfg.seed, ppo=base, scene=asdict(scene),
                      imagination={k: v for k, v in OmegaConf.to_container(cfg.imagination).items() if k != "enabled"},
                      real_baseline=dict(num_envs=cfg.real_baseline.num_envs),
                      eval=dict(seeds=cfg.eval.seeds, first_seed=cfg.eval.first_seed,
                                deterministic=cfg.eval.deterministic, skill_chunks=cfg.eval.skill_chunks)),
        agents={})
    tb = str(out / "tb")
    deadline = time.time() + 60 * cfg.time_limit_min if cfg.time_limit_min is not None else None
    settings_file, record_file = out / "settings.json", out / "train_agent.json"
    if settings_file.is_file() and json.loads(settings_file.read_text()) != jsonable(record["settings"]):
        raise SystemExit(f"error: {out} holds agents trained with other settings ({settings_file}); rerun with the "
                         "same settings to continue, or use another out_dir")
    settings_file.write_text(json.dumps(jsonable(record["settings"]), indent=1))
    earlier = json.loads(record_file.read_text()).get("agents", {}) if record_file.is_file() else {}

    def train_and_evaluate(kind: str, make_env) -> None:
        path = out / f"{kind}_ppo.zip"
        if kind in earlier and earlier[kind].get("real") and path.is_file():
            record["agents"][kind] = earlier[kind]  # trained and evaluated by an earlier call
            return
        env = make_env()
        ppo_cfg = PPOConfig(**base, seed=cfg.seed, device=str(device), tensorboard_log=tb, tb_log_name=kind,
                            progress_bar=cfg.progress)
        policy = train_ppo(env, ppo_cfg, resume=path, deadline=deadline)
        env.close()
        policy.save(path, exclude=["tensorboard_log"])  # a folder of this machine: not part of the policy
        entry = dict(env_steps=int(policy.num_timesteps), train_seconds=round(policy.train_seconds, 1),
                     real_env_steps_while_learning=0 if kind == "imagination" else int(policy.num_timesteps),
                     real=None, command=record["command"], date=record["date"])
        if policy.finished:
            entry["real"] = evaluate(policy, tasks, cfg, scene, cfg.progress, judge)
        else:
            print(f"time limit: {kind} PPO at {policy.num_timesteps} of {ppo_cfg.total_timesteps} env steps; rerun "
                  "the same command to continue")
            if cfg.eval.at_time_limit:  # the policy as it stands (session 27's time-boxed lease had to do it by hand)
                entry["real_at_time_limit"] = evaluate(policy, tasks, cfg, scene, cfg.progress, judge)
        record["agents"][kind] = entry

    heads = judge = None
    if cfg.imagination.enabled or cfg.eval.skill_chunks > 1:
        heads, record["heads"] = resolve_heads(cfg.heads, folder, cfg.data, out, mc.frame_size, device,
                                               fit_steps=cfg.heads_fit_steps, seed=cfg.seed)
        judge = heads if cfg.eval.skill_chunks > 1 else None  # ends each skill's run in the real scene
    if cfg.imagination.enabled:
        starts = cfg.imagination.start_frames
        if starts == "auto":
            starts = start_frames_from_data(cfg.data, tasks, mc.frame_size, out) if cfg.data else None
        print(f"PPO in imagination: {base['total_timesteps']} env steps, {cfg.imagination.num_envs} imagined envs")
        train_and_evaluate("imagination", lambda: imagined_vec_env(
            model, heads, tasks, cfg.imagination.num_envs, cfg.max_chunks, seed=cfg.seed,
            denoise_steps=cfg.imagination.denoise_steps, temp_lora=cfg.imagination.temp_lora,
            start_frames=str(starts) if starts else None, precision=cfg.imagination.precision,
            compile=cfg.imagination.compile, reward=cfg.reward))
    if cfg.real_baseline.enabled and (deadline is None or time.time() < deadline):
        print(f"PPO in the real scene: {base['total_timesteps']} env steps, {cfg.real_baseline.num_envs} scenes")
        train_and_evaluate("real", lambda: real_vec_env(tasks, mc.frame_size, cfg.real_baseline.num_envs,
                                                        cfg.max_chunks, scene, seed=cfg.seed,
                                                        subprocess=cfg.real_baseline.subprocess,
                                                        reward=cfg.reward))
    for kind, entry in earlier.items():  # an agent this call did not run keeps its earlier record
        record["agents"].setdefault(kind, entry)
    agents = record["agents"]
    done = {k: a for k, a in agents.items() if a.get("real")}
    if "imagination" in done and "real" in done and done["real"]["real"]["success"] > 0:
        record["ratio"] = done["imagination"]["real"]["success"] / done["real"]["real"]["success"]
    record["table"] = markdown(record)
    (out / "train_agent.json").write_text(json.dumps(jsonable(record), indent=1))
    (out / "train_agent.md").write_text(record["table"] + "\n")
    return record


NAMES = {"imagination": "PPO in imagination (world model + heads)", "real": "PPO in the real scene"}


def markdown(record: dict) -> str:
    s, agents = record["settings"], record["agents"]
    tasks = s["tasks"]
    lines = [
        "# PPO trained in imagination vs in the real scene: real success",
        "",
        f"- command: `{record['command']}`",
        f"- machine: {record['machine']}; date: {record['date']}",
        f"- model: `{s['model']}`; data: `{s['data']}`; reward heads: "
        f"{record.get('heads', {}).get('source', '-')}; reward: {s.get('reward', 'scene')}",
        f"- {s['eval']['seeds']} real episodes per task (scene seeds {s['eval']['first_seed']}..); "
        f"at most {s['max_chunks']} chunks per episode; {s['scene']['chunk_len']} frames per chunk, frame skip "
        f"{s['scene']['frame_skip']}",
        "",
        "| agent | env steps | real-scene steps while learning | training wall-clock (s) | "
        + " | ".join(f"real success: {t}" for t in tasks) + " | mean | evaluation wall-clock (s) |",
        "|---|---:|---:|---:|" + "---:|" * len(tasks) + "---:|---:|",
    ]
    for key, a in agents.items():
        real, steps = a.get("real"), a["env_steps"]
        if not real:
            real, steps = a.get("real_at_time_limit"), f"{steps} (training, time limit reached)"
        if not real:
            lines.append(f"| {NAMES[key]} | {steps} | {a['real_env_steps_while_learning']} | {a['train_seconds']} | "
                         + " | ".join("–" for _ in tasks) + " | – | – |")
            continue
        per = real["per_task"]
        lines.append(f"| {NAMES[key]} | {steps} | {a['real_env_steps_while_learning']} | {a['train_seconds']} | "
                     + " | ".join(f"{per[t]['success']:.0%}" for t in tasks)
                     + f" | {real['success']:.0%} | {real['seconds']} |")
    if "ratio" in record:
        lines += ["", f"Imagination PPO reaches {record['ratio']:.0%} of the real-scene PPO's success."]
    return "\n".join(lines)


@hydra.main(config_path="conf", config_name="train_agent", version_base="1.3")
def main(cfg: DictConfig) -> None:
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        check_tasks(list(cfg.tasks))
    except UnknownInstruction as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(run(cfg)["table"])


if __name__ == "__main__":
    main()

"""Session 31: the learning curves of the lease's two task-4 PPO runs (docs/results/ppo_task4_s31_h200.json, from their
TensorBoard logs) on one plot; session 33 drew its one real-scene run with it (a JSON of the same shape and a session),
session 34 its two imagination runs (keys "imagination, seed N") beside session 33's real one (several JSONs), session
35 its three runs (keys "imagination, seed N", "real, seed 1"; stopped by their time limit, so judged as they stood),
session 36 its two imagination runs beside session 35's real one, session 37 those three beside its own real-scene seed 2
(each session's caption in CAPTIONS).

    python docs/results/ppo_task4_curves_s31.py docs/ppo_task4_s31_h200.png
    python docs/results/ppo_task4_curves_s31.py docs/ppo_task4_s33_h200.png docs/results/ppo_task4_s33_h200.json 33
    python docs/results/ppo_task4_curves_s31.py docs/ppo_task4_s34_h200.png docs/results/ppo_task4_s34_h200.json \
        docs/results/ppo_task4_s33_h200.json 34
    python docs/results/ppo_task4_curves_s31.py docs/ppo_task4_s35_h200.png docs/results/ppo_task4_s35_h200.json 35
    python docs/results/ppo_task4_curves_s31.py docs/ppo_task4_s36_h200.png docs/results/ppo_task4_s36_h200.json 36
    python docs/results/ppo_task4_curves_s31.py docs/ppo_task4_s37_h200.png docs/results/ppo_task4_s36_h200.json \
        docs/results/ppo_task4_s37_h200.json 37
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

args = sys.argv[2:]
session = args.pop() if args and args[-1].isdigit() else "31"
runs = {}
for path in args or ["docs/results/ppo_task4_s31_h200.json"]:
    runs.update(json.load(open(path)))
tags = {"rollout/success_rate": "episodes ended as done (by the heads in imagination)",
        "rollout/ep_rew_mean": "episode return (minus skills to go per chunk)",
        "train/entropy_loss": "entropy loss"}
fig, axes = plt.subplots(1, len(tags), figsize=(15, 4))
for ax, (tag, title) in zip(axes, tags.items()):
    for key, rec in runs.items():
        world, _, seed = key.partition(", ")  # "imagination" or "imagination, seed 2"
        steps, values = zip(*rec["curves"][tag])
        agent = rec["agents"][world]
        real = (agent["real"] or agent["real_at_time_limit"])["success"]  # a run its time limit stopped: as it stood
        where = ("the real scene" if world == "real" else world) + (f", {seed}" if seed else "")
        ax.plot(steps, values, label=f"PPO in {where} (real success {real:.0%})")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("env steps")
axes[0].legend(fontsize=8)
seeds = "seed 1" if not any(", seed" in key for key in runs) else "seeds 1-2, the real-scene run session 33's"
if any(key.startswith("real, ") for key in runs):
    seeds = "imagination seeds 1-2, real-scene seed 1, side by side on one machine"
CAPTIONS = {  # sessions whose runs the key-based caption above does not describe
    "36": "imagination seeds 3-4 (session 36) at the env steps of session 35's real-scene seed 1",
    "37": "imagination seeds 3-4 (session 36), real-scene seeds 1 (session 35) and 2 (session 37, alone)"}
seeds = CAPTIONS.get(session, seeds)
fig.suptitle(f"task4_put_in_drawer, reward=to_go, {seeds}, one H200 (session {session})")
fig.tight_layout()
fig.savefig(sys.argv[1], dpi=80)

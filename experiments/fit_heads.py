"""Fit a model's reward / success / termination heads on real episodes and ship them in its folder.

    python -m experiments.fit_heads --model runs/small/model --data data/scene
    python -m experiments.fit_heads --model runs/small/model --data data/scene --steps 4000 --device cuda
    python -m experiments.fit_heads --model default --data data/heads_eval --judge   # measure the heads it has
    python -m experiments.fit_heads --model runs/small/model --data data/scene --continue --history --next-skill \
        --imagined-steps 2 --imagined-mode free --device cuda   # heads that read the episode so far (PPO in imagination)

The heads (`worldmodel.heads.RewardHeads`) judge frames, so they learn from real frames only: every
10th episode is held out and the accuracy there goes to ``<model>/heads/fit.json`` and the output. Scene
episodes also teach every task 1-5 and drawer memory instruction, labelled on their recorded simulator state
(hindsight labels, `agents.heads.scene_labels`; ``--no-relabel`` for the episodes' own labels only), and the
held-out numbers include how often the heads call a task done where it is not ("false done") and the reverse, also
per task. With
``heads/`` in the model folder, `SlowFastVGen-v0` gives real rewards and the planners and agents score
imagined chunks with them (`agents.heads.resolve_heads` finds them there).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from agents.heads import HEADS_DIR, fit_and_save
from envs.real.skills import SKILLS
from worldmodel.config import WorldModelConfig


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m experiments.fit_heads", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", required=True, help="model folder (save_pretrained); heads go to its heads/")
    ap.add_argument("--data", required=True, help="h5 episode file or folder of real episodes")
    ap.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    ap.add_argument("--batch", type=int, default=64, help="chunks per step (default 64)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--heldout", type=float, default=None,
                    help="share of episodes held out (default 0.1; with --judge: judge that held-out share only)")
    ap.add_argument("--imagined-steps", type=int, default=0,
                    help="> 0: also train (and judge) on the model's imagined copies of the same episodes, made "
                         "with this many denoising steps (the planner's), so the heads read imagined frames as it "
                         "feeds them (evaluation.rollout.imagined_episodes)")
    ap.add_argument("--imagined-mode", choices=("teacher", "free"), default="teacher",
                    help="with --imagined-steps: each imagined chunk from the real frames before it (teacher, default) "
                         "or the whole episode imagined from its first frame under the recorded skills (free: what PPO "
                         "in imagination sees, the real labels kept)")
    ap.add_argument("--history", action="store_true",
                    help="heads that also read the episode so far (its start frame and earlier chunk ends, max-pooled:"
                         " worldmodel.heads); with --continue the model's heads grow it")
    ap.add_argument("--max-episodes", type=int, default=None, help="read at most this many episodes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--relabel", action=argparse.BooleanOptionalAction, default=True,
                    help="also learn tasks 1-5 and the drawer memory tasks from every scene episode's recorded state "
                         "(default on)")
    ap.add_argument("--continue", dest="continue_from", action="store_true",
                    help="start from the model's heads/ instead of fresh heads (e.g. to add the hindsight labels)")
    ap.add_argument("--next-skill", action="store_true",
                    help="give the heads a next-skill output (a skill prior for the planners, `--prior-weight`), "
                         "learnt from the hindsight labels; with --continue it is added to the model's heads")
    ap.add_argument("--judge", action="store_true",
                    help="fit nothing: measure the model's heads on every episode of --data (held-out data)")
    args = ap.parse_args(argv)

    folder = Path(args.model)
    if args.model == "default":
        from worldmodel.loading import DEFAULT_MODEL_DIR

        folder = DEFAULT_MODEL_DIR
    if not (folder / "config.json").is_file():
        raise SystemExit(f"{folder} is not a model folder (no config.json); pass the folder save_pretrained wrote")
    frame_size = WorldModelConfig.load(folder / "config.json").frame_size
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    imagine = None
    if args.imagined_steps > 0:
        from functools import partial

        from evaluation.rollout import imagined_episodes
        from worldmodel.loading import load_model

        model, _ = load_model(str(folder), device=device)
        imagine = partial(imagined_episodes, model, denoise_steps=args.imagined_steps, seed=args.seed, log=print,
                          mode=args.imagined_mode)
    if args.judge:
        return judge(folder, args, imagine)
    init = None
    if args.continue_from:
        from worldmodel.heads import RewardHeads

        if not (folder / HEADS_DIR).is_dir():
            raise SystemExit(f"--continue: {folder} has no {HEADS_DIR}/ to start from")
        init = RewardHeads.from_pretrained(folder / HEADS_DIR).with_to_go()  # heads from before to_go learn it
    _, info = fit_and_save(args.data, frame_size, folder / HEADS_DIR, steps=args.steps, batch_size=args.batch,
                           lr=args.lr, heldout=0.1 if args.heldout is None else args.heldout,
                           max_episodes=args.max_episodes, seed=args.seed, device=device, relabel=args.relabel,
                           init=init, imagine=imagine, next_skill=len(SKILLS) if args.next_skill else 0,
                           history=args.history, progress=True)
    print(json.dumps(info))
    return info


def judge(folder: Path, args: argparse.Namespace, imagine=None) -> dict:
    """The model's heads on every episode of ``--data`` (with ``--heldout``: on the share fitting holds out), as
    `fit_heads` measures its held-out share; with ``imagine`` on its imagined copies too."""
    from agents.heads import HeadsFit, describe_fit, heldout_split, iter_episodes, judge_heads
    from worldmodel.heads import RewardHeads

    if not (folder / HEADS_DIR).is_dir():
        raise SystemExit(f"{folder} has no {HEADS_DIR}/ to judge; fit them first (without --judge)")
    heads = RewardHeads.from_pretrained(folder / HEADS_DIR)
    episodes = [e for e in iter_episodes(args.data, args.max_episodes) if len(e["reward"])]
    if args.heldout is not None:
        episodes = heldout_split(episodes, args.heldout)[1]
    fit = judge_heads(heads, episodes, HeadsFit(0, 0, *[float("nan")] * 4))
    if imagine is not None:
        fit.imagined = judge_heads(heads, imagine(episodes), HeadsFit(0, 0, *[float("nan")] * 4)).hindsight()
    print(describe_fit(fit))
    info = {"heads": str(folder / HEADS_DIR), "data": str(args.data), **fit.as_dict()}
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    main()

"""Experiment (not shipped): the usual fast step (its own forward, null action, a fresh noise draw) with t always the
sampler's first timestep (999), the one t the first-pass step learns at; then `experiments.evaluate outcome` as given.
`PYTHONPATH=. python docs/results/outcome_first_timestep_s38.py outcome --model default ... --temp-lora`"""
import sys

import torch

from experiments import evaluate
from worldmodel.memory import batched_lora

batched_lora.rule.fast_timesteps = lambda config, model: torch.tensor([model.scheduler.config.num_train_timesteps - 1])
evaluate.main(sys.argv[1:])

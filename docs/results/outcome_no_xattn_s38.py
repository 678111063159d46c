"""Experiment (not shipped): the first-pass fast step with the factors of the layers that read the action tokens
(the spatial cross-attention's to_k / to_v) left out of Θ's step; then `experiments.evaluate outcome` as given."""
import re, sys, torch
from worldmodel.memory import batched_lora
from experiments import evaluate

real = batched_lora.BatchedTempLoRA._adam
PATTERN = re.compile(r"\.attentions\.\d+\..*attn2\.to_[kv]$")


def adam(self, envs, grad):
    grad = grad.clone()
    r = self.config.rank
    for name, lay in zip(self.layer_names(), self.layout):
        if PATTERN.search(name):
            grad[:, lay.a_offset: lay.b_offset + r * lay.d_out] = 0
    return real(self, envs, grad)


batched_lora.BatchedTempLoRA._adam = adam
evaluate.main(sys.argv[1:])

"""Temp-LoRA episodic memory: one fast-learning rule (`rule`), two holders of Θ behind one interface.

- `TempLoRA`: one episode's Θ as peft adapter layers (mergeable into Φ for sampling).
- `BatchedTempLoRA`: N episodes' Θ as per-sample low-rank factors inside one batched UNet forward.
Both offer ``reset(ids)``, ``applied(ids)``, ``update(chunk, ids) -> [FastUpdate]`` and ``fork(src, dst)``
(`rule.EpisodicMemory`); the imagination core (`worldmodel.imagination`) drives either.
"""

from .batched_lora import BatchedTempLoRA
from .rule import EpisodicMemory, FastUpdate
from .temp_lora import TempLoRA

__all__ = ["BatchedTempLoRA", "EpisodicMemory", "FastUpdate", "TempLoRA"]

"""SlowFast-VGen world model: masked chunk video diffusion with Temp-LoRA episodic memory."""

from .config import PRESETS, TempLoRAConfig, WorldModelConfig, from_preset
from .model import Chunk, SlowFastVGen
from .temp_lora import FastUpdate, TempLoRA

__all__ = ["PRESETS", "Chunk", "FastUpdate", "SlowFastVGen", "TempLoRA", "TempLoRAConfig", "WorldModelConfig",
           "from_preset"]

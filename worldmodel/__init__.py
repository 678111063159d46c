"""SlowFast-VGen world model: masked chunk video diffusion with Temp-LoRA episodic memory."""

from .chunk import Chunk
from .config import PRESETS, TempLoRAConfig, WorldModelConfig, from_preset
from .imagination import Imagination
from .memory import BatchedTempLoRA, FastUpdate, TempLoRA
from .model import SlowFastVGen

__all__ = ["PRESETS", "BatchedTempLoRA", "Chunk", "FastUpdate", "Imagination", "SlowFastVGen", "TempLoRA",
           "TempLoRAConfig", "WorldModelConfig", "from_preset"]

"""``SlowFastVGen-v0``: the world model as a Gymnasium env (single and batched vector), bookkeeping over
one `worldmodel.Imagination` (see `single` for the env's behaviour and options)."""

from .batch import EnvBatch, StepBatch, step_info
from .options import SkillText, StepTimings, WorldModelEnvConfig, normalize_text
from .single import WorldModelEnv
from .vector import WorldModelVectorEnv

__all__ = ["EnvBatch", "SkillText", "StepBatch", "StepTimings", "WorldModelEnv", "WorldModelEnvConfig",
           "WorldModelVectorEnv", "normalize_text", "step_info"]

"""Training: the loop behind `rnnkit train` (tasks, checkpoints, plots, multi-process)."""
from .config import TrainConfig
from .trainer import Interrupted, train

__all__ = ["TrainConfig", "train", "Interrupted"]

"""Training: the loop, optimizer and schedule, distributed setup, checkpoints and run logs."""

from loom.train.checkpoint import load_trained_model
from loom.train.trainer import train

__all__ = ["load_trained_model", "train"]

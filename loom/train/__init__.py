"""Training: the loop, optimizer and schedule, distributed setup and run logs. Checkpoints are
written and read by `loom.checkpoint`, below this package, so that evaluation, reasoning and
serving load a model without importing training."""

from loom.train.trainer import train

__all__ = ["train"]

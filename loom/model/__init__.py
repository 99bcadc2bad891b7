"""The model: the GPT transformer, its config, and generation with a key/value cache."""

from loom.model.generate import generate
from loom.model.gpt import GPT, KVCache, ModelConfig

__all__ = ["GPT", "KVCache", "ModelConfig", "generate"]

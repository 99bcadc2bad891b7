"""The model: the GPT transformer, its config, and generation with a key/value cache (one
sequence at a time, `generate`; or a batch over a static cache with a compiled step,
`StaticDecoder`)."""

from loom.model.generate import StaticDecoder, generate
from loom.model.gpt import GPT, KVCache, ModelConfig

__all__ = ["GPT", "KVCache", "ModelConfig", "StaticDecoder", "generate"]

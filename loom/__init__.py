"""loom: from raw text and code to a trained, evaluated, served GPT-style language model."""

__version__ = "0.1.0"

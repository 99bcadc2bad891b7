"""Through the front door: a loom run as a Hugging Face transformers checkpoint (`loom export hf`)."""

from loom.export.hf import export_hf

__all__ = ["export_hf"]

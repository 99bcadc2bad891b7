"""Through the front door: a loom run as a Hugging Face transformers checkpoint (`loom export hf`)
or a GGUF file for llama.cpp (`loom export gguf`), and a transformers checkpoint as a loom run
(`loom import hf`)."""

from loom.export.gguf import export_gguf
from loom.export.hf import export_hf
from loom.export.hf_import import import_hf

__all__ = ["export_gguf", "export_hf", "import_hf"]

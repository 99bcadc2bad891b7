# Two commands do all the set-up on a fresh clone:
#   make quickstart   virtual environment + loom, then `loom quickstart`
#   make test         virtual environment + loom + test tools, then lint and the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch release loom is tested with. pyproject.toml accepts any torch>=2.5; on machines
# that keep a local CPU wheel of this release, pip takes it from disk instead of downloading.
TORCH  ?= torch==2.13.0

.PHONY: quickstart test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(BIN)/loom quickstart

test: install
	$(BIN)/ruff check loom tests bench experiments
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs data .pytest_cache

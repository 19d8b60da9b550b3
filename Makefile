# tether: `make demo` and `make test` work on a fresh Debian machine from a clean clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := openssh-server openssh-client tmux rsync git libnss-wrapper slurm-wlm munge python3-venv

.PHONY: demo test lint bench bench-quick system venv clean

demo: $(STAMP)
	$(BIN)/tether demo

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run_all.py --quick --results /tmp/tether-bench-quick.md

system:
	@bash .ci/system-packages.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@bash .ci/system-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The two commands a new user needs: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Run everything as if the venv were activated: Flink's thread-mode Python finds its packages this way.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit setup jars bench clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (LogClaw needs Python 3.11 and Java 17)"; exit 1; }
	@command -v java >/dev/null || { echo "error: java not found (PyFlink 2.3 needs Java 17 on PATH)"; exit 1; }
	@echo "==> creating $(VENV) and installing the pinned dependency set (first run takes a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip==26.3" wheel
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip check
	@touch $(STAMP)

setup: $(STAMP) jars

jars: $(STAMP)
	@$(BIN)/logclaw jars

demo: setup
	$(BIN)/logclaw demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy udfs connectors jobs
	$(BIN)/lint-imports

test: setup lint
	LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/python -m pytest tests --ignore=tests/bench

bench: setup
	$(BIN)/python -m tests.bench.codec_bench

clean:
	rm -rf $(VENV) .jars .cache

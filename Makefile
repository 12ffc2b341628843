# The two commands a new user needs: `make demo` and `make test`. Both set everything up first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Run everything as if the venv were activated: Flink's thread-mode Python finds its packages this way.
export PATH := $(CURDIR)/$(BIN):$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
STAMP := $(VENV)/.installed
# Validators compiled from the published Flink operator and Strimzi CRDs (npm); only `make test` needs Node.js.
CRD_CHECK := tests/crd_check
CRD_STAMP := $(CRD_CHECK)/node_modules/.installed

.PHONY: demo test lint unit setup jars bench clean browser

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

$(CRD_STAMP): $(CRD_CHECK)/package.json $(CRD_CHECK)/package-lock.json
	@{ command -v node && command -v npm; } >/dev/null || { echo "error: node/npm not found (tests validate deploy/ against the published CRDs with Node.js)"; exit 1; }
	npm ci --prefix $(CRD_CHECK) --no-audit --no-fund
	@touch $(CRD_STAMP)

# The console's browser test drives Debian's chromium with chromium-driver (nothing downloaded at run time).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "==> installing chromium and chromium-driver (the console's browser test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: setup lint $(CRD_STAMP) browser
	LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/python -m pytest tests --ignore=tests/bench

# Quick sizes; each benchmark's --help has the full-size flags. A failed benchmark does not stop the
# report, which names any missing result and the command that makes it. The job runs print and
# record the load average: on a shared machine their wall-clock rates are lower and wider.
bench: setup
	mkdir -p bench-out docs
	-$(BIN)/python -m tests.bench.codec_bench --records 20000 --runs 3 --json-out bench-out/codec_bench.json
	-$(BIN)/python -m tests.bench.engine_bench --runs 2 --minutes 5 --max-records 1000000 --out bench-out/engine_bench.json
	-$(BIN)/python -m tests.bench.job_bench --repeat 1 --hours 2 --samples 20 --out bench-out/job_bench.json
	-$(BIN)/python -m tests.bench.job_bench --source kafka --mode thread --cluster standalone --taskmanagers 1,2 --hours 12 --loops 8 --event-rate 2000 --repeat 3 --samples 10 --out bench-out/job_bench_scaling.json
	-$(BIN)/python -m tests.bench.span_bench --cluster standalone --hours 4 --repeat 2 --out bench-out/span_bench.json
	-$(BIN)/python -m tests.bench.span_bench --cluster standalone --hours 0.0167 --spans-per-s 25000 --span-seconds 60 --repeat 2 --out bench-out/span_bench_live.json
	-$(BIN)/python -m tests.bench.job_bench --compare --cluster standalone --hours 12 --loops 8 --event-rate 2000 --repeat 1 --samples 10 --out bench-out/job_bench_compare.json
	-{ [ -d .cache/drain3/drain3 ] || $(BIN)/python -m pip install -q --no-deps --target .cache/drain3 -c constraints.txt drain3 cachetools==4.2.1; }; $(BIN)/python -m tests.bench.template_bench --out bench-out/template_bench.json
	-$(BIN)/python -m tests.bench.store_bench --runs 3 --baseline 98f9422 --opensearch --out bench-out/store_bench.json
	-LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/python -m tests.bench.ticketing_bench --incidents 200 --out bench-out/ticketing_bench.json
	$(BIN)/logclaw eval --json-out bench-out/eval.json
	$(BIN)/logclaw report

clean:
	rm -rf $(VENV) .jars .cache

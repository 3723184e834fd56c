# One task runner for the project. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KAFKA_PORT ?= 9092
NODES ?= 1
SECURE ?=
DEMO_ARGS ?=
CHAOS_ARGS ?=
BASE ?= HEAD

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11+ is needed (python3 not found)"; exit 1; }
	@echo "==> creating $(VENV) and installing the project with its dev tools"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv with the project and dev tools

.PHONY: kafka-fetch
kafka-fetch: venv ## Fetch the Apache Kafka jars from Maven Central (once)
	$(PY) tools/local_kafka.py fetch

.PHONY: kafka-up
kafka-up: kafka-fetch ## Start a local Kafka on 127.0.0.1:$KAFKA_PORT (NODES=3; SECURE=1: SASL_SSL)
	$(PY) tools/local_kafka.py up --port $(KAFKA_PORT) --nodes $(NODES) $(if $(SECURE),--secure)

.PHONY: kafka-down
kafka-down: ## Stop the local Kafka started by kafka-up
	@if [ -x $(PY) ]; then $(PY) tools/local_kafka.py down --port $(KAFKA_PORT); else $(PYTHON) tools/local_kafka.py down --port $(KAFKA_PORT); fi

.PHONY: lint
lint: venv ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check saga_app topics participants
	$(VENV)/bin/mypy saga_app topics

.PHONY: unit
unit: venv ## Unit tests only (no broker, fast)
	$(PY) -m pytest tests/unit -q

.PHONY: test
test: kafka-fetch browser lint ## Set everything up, then lint and run the whole suite against a real broker
	$(PY) -m pytest -q

.PHONY: browser
browser: ## Install Debian's chromium for the dashboard's browser test (only when missing)
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "The dashboard test needs /usr/bin/chromium: run 'apt-get install chromium' as root"; exit 1; \
	else \
		echo "==> /usr/bin/chromium is missing: installing Debian's chromium (apt-get, once)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -q && apt-get install -y -q chromium; \
	fi

.PHONY: demo
demo: kafka-fetch ## Set everything up, start Kafka, a worker and the participants, run a batch of sagas
	$(PY) tools/demo.py $(DEMO_ARGS)

.PHONY: bench
bench: venv ## Run the benchmarks (they print figures; they are not tests)
	$(PY) benchmarks/bench_decide.py
	$(PY) benchmarks/bench_orchestrator.py

.PHONY: bench-rebalance
bench-rebalance: kafka-fetch ## What a rebalance costs: records read again, seconds until sagas move on
	$(PY) benchmarks/rebalance.py

.PHONY: bench-scale
bench-scale: venv ## A worker's takeover and sweeper with 1,000,000 sagas in flight (BENCH_ARGS="--sagas 200000")
	$(PY) benchmarks/scale.py $(BENCH_ARGS)

.PHONY: bench-takeover
bench-takeover: kafka-fetch ## A new worker taking over 1,000,000 stored sagas on a real broker (BENCH_ARGS="--sagas 200000")
	$(PY) benchmarks/takeover.py $(BENCH_ARGS)

.PHONY: bench-e2e
bench-e2e: kafka-fetch ## Sagas/s of the product beside the bare-aiokafka floor on one broker (BENCH_ARGS="--count 500")
	$(PY) benchmarks/e2e.py $(BENCH_ARGS)

.PHONY: bench-ceiling
bench-ceiling: kafka-fetch ## The best product/floor ratio this contract and the product's logic allow here, no Faust
	$(PY) benchmarks/ceiling.py $(BENCH_ARGS)

.PHONY: bench-round
bench-round: kafka-fetch ## CPU a Python client spends per fetch (by partitions assigned) and per produce request
	$(PY) benchmarks/round_cost.py $(BENCH_ARGS)

.PHONY: bench-hops
bench-hops: kafka-fetch ## Where a saga's time goes at a steady load, hop by hop (BENCH_ARGS="--rate 10 --narrow")
	$(PY) benchmarks/hops.py $(BENCH_ARGS)

.PHONY: bench-ab
bench-ab: kafka-fetch ## This checkout's product against commit BASE, runs alternated (BASE=HEAD~1 BENCH_ARGS="--rounds 3")
	$(PY) benchmarks/ab.py $(BASE) $(BENCH_ARGS)

.PHONY: chaos
chaos: kafka-fetch ## Sagas through worker, broker and participant kills, checked against ledgers (CHAOS_ARGS="--count 500")
	$(PY) -m benchmarks.chaos $(CHAOS_ARGS)

.PHONY: clean
clean: ## Remove the virtualenv and caches (keeps downloaded Kafka jars in .cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

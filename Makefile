# Developer entry points. The real work is in scripts/ (see scripts/test.sh, scripts/services/).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

VENV   := .venv
PYTHON ?= python3
# services for services-up / services-down (empty: the default set of scripts/services/all.sh)
SERVICES ?=
# extra arguments for `banking bench`
BENCH_ARGS ?=

.PHONY: help install system-deps run test services-up services-down services-status lint bench

help:
	@echo "make install        create $(VENV) and pip install -e .[dev]"
	@echo "make system-deps    apt packages: postgresql, redis, prometheus, wrk (no-op when present)"
	@echo "make run            install, then $(VENV)/bin/banking serve"
	@echo "make test           scripts/test.sh: services + ruff + mypy + pytest (also what CI runs)"
	@echo "make services-up    start native services (SERVICES=\"postgres redis kafka prometheus\")"
	@echo "make services-down  stop them"
	@echo "make lint           ruff + mypy"
	@echo "make bench          $(VENV)/bin/banking bench against the private PostgreSQL (BENCH_ARGS=...)"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

install: $(VENV)/bin/python
	$(VENV)/bin/pip install -q -e '.[dev]'

system-deps:
	bash scripts/install-system-deps.sh

run: install
	$(VENV)/bin/banking serve

test:
	bash scripts/test.sh

services-up:
	bash scripts/services/all.sh start $(SERVICES)

services-down:
	bash scripts/services/all.sh stop $(SERVICES)

services-status:
	bash scripts/services/all.sh status $(SERVICES)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy src benchmarks

bench: install
	eval "$$(bash scripts/services/postgres.sh start)"; $(VENV)/bin/banking bench $(BENCH_ARGS)

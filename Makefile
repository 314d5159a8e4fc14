# The commands README promises: `make test`, `make bench`, `make demo`, `make chaos`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install services test bench demo chaos lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

services:
	@bash scripts/ensure_services.sh

test: install services
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install services
	$(BIN)/python benchmarks/breaker_overhead.py
	$(BIN)/python benchmarks/enrichment_throughput.py
	$(BIN)/python benchmarks/api_big_bodies.py --body-mb 1 --seconds 5

demo: install
	$(BIN)/pipeline demo

# Its own redis-server, Postgres cluster, simulator, worker and beat: needs no services.
chaos: install
	$(BIN)/python -m chaos $(CHAOS_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test up lint bench clean install

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## start an embedded stack and run the end-to-end multi-agency demo
	$(BIN)/databus demo

test: $(STAMP)  ## the whole suite: unit, integration (embedded broker + Redis), SQLite and PostgreSQL
	$(BIN)/python -m pytest -n 2 --dist loadfile --max-worker-restart=0 $(PYTEST_ARGS)

up: $(STAMP)    ## run the bus: gateway on :8000, embedded broker and Redis
	$(BIN)/databus up

lint: $(STAMP)
	$(BIN)/ruff check bus connectors tests bench
	$(BIN)/mypy

bench: $(STAMP) ## benchmarks as ratios against raw Kafka in the same run; JSON under bench/results/
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .databus .pytest_cache .mypy_cache .ruff_cache

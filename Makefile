# The README's commands. `make test` and `make train` set everything up from nothing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= examples/config.yaml

.PHONY: install prepare-data train test lint bench clean

$(BIN)/ocdspy: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[all]" --group dev
	touch $@

install: $(BIN)/ocdspy            ## create .venv with ocdspy, the optimizer stack and the local model

prepare-data: install             ## validate, convert and split the sessions named by CONFIG
	$(BIN)/ocdspy validate --config $(CONFIG)
	$(BIN)/ocdspy convert --config $(CONFIG)
	$(BIN)/ocdspy split --config $(CONFIG)

train: install                    ## the whole pipeline on CONFIG (default: examples/, local model)
	$(BIN)/ocdspy pipeline --config $(CONFIG)

test: install                     ## the test suite
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

bench: install                    ## speed and memory measurements (see BENCHMARKS.md)
	$(BIN)/python benchmarks/bench_startup.py
	$(BIN)/python benchmarks/bench_throughput.py

clean:
	rm -rf examples/data/processed examples/data/splits examples/outputs examples/.dspy_cache

# Two commands for a newcomer (see README): `make demo` and `make test`.
# Both create .venv with the standard library's venv and pip-install the package with
# everything it needs (CASA wheels included). No uv, no system CASA.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sails-installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist): one per core of the 2-core machines we run on; each test
# module stays on one worker (tests/conftest.py keeps heavy ones first). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sails demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache

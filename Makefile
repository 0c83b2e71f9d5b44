# Two entry points that the README promises work on a fresh machine:
#   make demo  - start the agent on a demo file store (created once under ./demo)
#   make test  - install everything into .venv, run the quality gates and the whole suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: dev demo test gates pytest bench deb clean

$(BIN)/secretd: agent/pyproject.toml sdk/pyproject.toml pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e './agent[aws,postgresql]' -e ./sdk -e '.[dev]'
	touch $(BIN)/secretd

dev: $(BIN)/secretd

demo: dev
	$(BIN)/python packaging/demo.py

gates: dev
	$(BIN)/ruff format --check agent sdk tests packaging
	$(BIN)/ruff check agent sdk tests packaging
	$(BIN)/mypy agent/secretd sdk/secretd_client

pytest: dev
	$(BIN)/pytest -q

test: gates pytest

bench: dev
	$(BIN)/python -m tests.bench

deb:
	packaging/build-deb.sh dist

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

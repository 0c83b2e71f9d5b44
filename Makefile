# Two entry points that the README promises work on a fresh machine:
#   make demo  - start the agent on a demo file store (created once under ./demo)
#   make test  - install everything into .venv, run the quality gates and the whole suite
# Also: make fuzz - the fuzz tier (tests/fuzz) long and randomly seeded; `make test`
# runs it too, bounded (well under a minute) and derandomized.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: dev demo test gates pytest fuzz bench deb clean

$(BIN)/secretd: agent/pyproject.toml sdk/pyproject.toml pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e './agent[aws,postgresql]' -e ./sdk -e '.[dev]'
	touch $(BIN)/secretd

dev: $(BIN)/secretd

demo: dev
	$(BIN)/python packaging/demo.py

gates: dev
	$(BIN)/ruff format --check agent sdk tests packaging docs
	$(BIN)/ruff check agent sdk tests packaging docs
	$(BIN)/mypy agent/secretd sdk/secretd_client

# Two runs side by side: the tests that change or read the host itself (systemd
# as PID 1 with the `secretd` user, the .deb installed and purged, the CLI's
# default /etc/secretd/secretd.toml) one after the other, and everything else
# spread over three workers (pytest-xdist); each of those uses only its own
# temporary files, sockets and ports.
HOST_WIDE := tests/system tests/integration/test_deb.py tests/integration/test_cli_habits.py

pytest: dev
	@$(BIN)/pytest -q $(HOST_WIDE) > .pytest-host.log 2>&1 & host=$$!; \
	$(BIN)/pytest -q -n 3 $(addprefix --ignore=,$(HOST_WIDE)); rest=$$?; \
	wait $$host; hostrc=$$?; \
	echo "--- the host-wide tiers ($(HOST_WIDE)):"; cat .pytest-host.log; rm -f .pytest-host.log; \
	test $$rest -eq 0 && test $$hostrc -eq 0

test: gates pytest

# Forty times the examples of the bounded run, new random ones each time; no
# per-test timeout. A failure prints the example and a @reproduce_failure line.
fuzz: dev
	SECRETD_FUZZ=long $(BIN)/pytest -q -s tests/fuzz --timeout=0

bench: dev
	$(BIN)/python -m tests.bench

deb:
	packaging/build-deb.sh dist

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Re-resolve every dependency and rewrite constraints.txt (review the diff).
lock:
	packaging/lock.sh

#!/usr/bin/env bash
# Regenerate constraints.txt on purpose: resolve every dependency of the agent
# (all extras), the SDK and the dev tools afresh in a throw-away venv, and pin
# what was installed. `make dev`, CI and the Debian build install with
# `-c constraints.txt`, so they all get exactly these versions until the next
# `make lock`. Review the diff before committing it.
set -euo pipefail
top="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --upgrade pip
"$work/venv/bin/pip" install --quiet "$top/agent[aws,postgresql]" "$top/sdk" "$top[dev]"
{
    echo "# Pinned versions of every third-party package secretd installs (agent with all"
    echo "# extras, SDK, dev tools). Made by packaging/lock.sh (make lock); do not edit."
    "$work/venv/bin/pip" freeze --all --exclude-editable \
        | grep -v -i -E '^(secretd|secretd-client|secretd-workspace|pip|setuptools|wheel)==' \
        | LC_ALL=C sort -f
} > "$top/constraints.txt"
echo "wrote $top/constraints.txt"

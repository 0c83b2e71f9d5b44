"""Property-based fuzzing of `secretd check -c FILE` with adversarial configs.

Configs start from a valid one (a real file store, key, TCP token and Vault
token files) and are mutated: values of any type at known and unknown keys,
paths pointed at the wrong files (a token file as a key file, a directory as a
token file, ...), keys removed, and raw TOML damaged byte by byte. Invariants:
exit status 0 or 2 (never an internal error), no traceback, and no byte of a
planted secret (TCP token, Vault token, a stored value, the store key) in
anything `check` prints.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.e2e.agent_proc import Store
from tests.fuzz.profiles import fuzz_settings

WORKER = Path(__file__).with_name("check_worker.py")
REPO = Path(__file__).resolve().parents[2]

SECTIONS = {
    "agent": ["socket", "socket_mode", "socket_group", "log_level", "log_format", "audit_log"],
    "tcp": ["listen", "token_file"],
    "cache": ["refresh_interval", "max_stale", "idle_evict", "max_entries", "max_bytes"],
    "limits": [
        "max_secret_bytes",
        "max_connections",
        "max_connections_per_uid",
        "idle_timeout",
        "write_timeout",
        "backend_rate",
        "backend_burst",
    ],
}
BACKEND_KEYS = ["type", "mount", "path", "key_file", "old_key_files", "timeout", "address"]
SCALARS = st.one_of(
    st.text(max_size=30),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["0600", "0777", "9999", "30s", "0s", "-1s", "1e999h", "250ms", "5m", "x"]),
    st.sampled_from(["127.0.0.1:0", "0.0.0.0:80", "[::1]:1", "localhost:99999", "file", "vault"]),
)


@dataclass
class Planted:
    directory: Path
    store: Store
    token_file: Path
    vault_token_file: Path
    canaries: tuple[str, ...]

    def paths(self) -> list[str]:
        d = self.directory
        return [
            str(p)
            for p in (
                self.token_file,
                self.vault_token_file,
                self.store.key,
                self.store.root,
                d,
                d / "missing",
                d / "s.sock",
            )
        ] + ["/dev/null", "relative/path", "", "/"]

    def base(self) -> dict[str, Any]:
        d = self.directory
        return {
            "agent": {"socket": str(d / "s.sock"), "log_format": "json"},
            "tcp": {"listen": "127.0.0.1:2773", "token_file": str(self.token_file)},
            "limits": {"max_connections": 64},
            "backends": {
                "local": {
                    "type": "file",
                    "path": str(self.store.root),
                    "key_file": str(self.store.key),
                },
                "vault": {
                    "type": "vault",
                    "mount": "vault/",
                    "address": "http://127.0.0.1:1",
                    "auth": {"method": "token", "token_file": str(self.vault_token_file)},
                },
            },
            "secret": [{"name": "app/k"}],
            "allow": [{"secrets": ["app/*"], "uids": [0]}],
            "template": [
                {"contents": "{{ secret('app/k') }}", "destination": str(d / "out.txt")},
            ],
        }


@pytest.fixture(scope="module")
def planted() -> Iterator[Planted]:
    directory = Path(tempfile.mkdtemp(prefix="sdfc", dir="/tmp"))
    try:
        store = Store.create(directory)
        value = f"stored-canary-{secrets.token_hex(8)}"
        store.put("app/k", value.encode())
        token, vault_token = (
            f"tcp-canary-{secrets.token_hex(8)}",
            f"vt-canary-{secrets.token_hex(8)}",
        )
        token_file, vault_token_file = directory / "tcp.token", directory / "vault.token"
        for path, text in ((token_file, token), (vault_token_file, vault_token)):
            path.write_text(text + "\n")
            path.chmod(0o600)
        key = store.key.read_bytes()
        canaries = (value, token, vault_token, key.hex(), base64.b64encode(key).decode())
        yield Planted(directory, store, token_file, vault_token_file, canaries)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def worker() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, str(WORKER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    yield proc
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def toml_value(value: Any) -> str:
    """`value` as TOML (inline tables and arrays only)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(config: dict[str, Any]) -> str:
    return "".join(f"{toml_value(key)} = {toml_value(value)}\n" for key, value in config.items())


@st.composite
def mutated_configs(draw: st.DrawFn, planted: Planted) -> str:
    config = planted.base()
    paths = st.sampled_from(planted.paths())
    values = st.one_of(SCALARS, paths, st.lists(SCALARS | paths, max_size=3))
    for _ in range(draw(st.integers(1, 3))):
        choice = draw(st.sampled_from(["section", "backend", "drop", "unknown", "rule"]))
        if choice == "section":
            section = draw(st.sampled_from(sorted(SECTIONS)))
            key = draw(st.sampled_from(SECTIONS[section]))
            config.setdefault(section, {})[key] = draw(values)
        elif choice == "backend":
            name = draw(st.sampled_from(["local", "vault"]))
            backend = config.setdefault("backends", {}).setdefault(name, {})
            backend[draw(st.sampled_from(BACKEND_KEYS))] = draw(values)
        elif choice == "drop":
            config.pop(draw(st.sampled_from(sorted(config))), None)
        elif choice == "unknown":
            config.setdefault("agent", {})[draw(st.text(min_size=1, max_size=10))] = draw(values)
        else:
            config["allow"] = [
                {
                    "secrets": draw(st.lists(st.text(max_size=12), max_size=2)),
                    "uids": draw(st.lists(st.integers(), max_size=2)),
                }
            ]
    text = toml_document(config)
    if draw(st.integers(0, 4)) == 0:  # sometimes damage the TOML itself
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=4)) + text[at + draw(st.integers(0, 3)) :]
    return text


@fuzz_settings(examples=150)
@given(data=st.data())
def test_check_survives_hostile_configs(
    planted: Planted, worker: subprocess.Popen[str], data: st.DataObject
) -> None:
    text = data.draw(mutated_configs(planted), label="config")
    path = planted.directory / "fuzz.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    path.chmod(0o600)
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(f"{path}\n")
    worker.stdin.flush()
    line = worker.stdout.readline()
    assert line, worker.stderr.read() if worker.stderr else "worker died"
    result = json.loads(line)
    printed = result["out"] + result["err"]
    assert result["rc"] in (0, 2), printed
    assert "internal error" not in printed and "Traceback" not in printed, printed
    for canary in planted.canaries:
        assert canary not in printed, (canary, printed)

"""The canary: a known secret value must never appear where values do not belong.

Component level (always runs): the log pipeline at debug level in both
formats, error messages, the audit writer and the metrics exposition, each fed
the canary the ways a careless caller might.
"""

from __future__ import annotations

import base64
import io
import pickle
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog

from secretd.audit import AuditLog
from secretd.errors import InvalidName, InvalidRequest, SecretdError
from secretd.logs import configure_logging
from secretd.metrics import Metrics
from secretd.model import Caller, SecretName, SecretValue

CANARY = "CANARY-d41f6c0e-9b7a-4e1b-a2f3-5c8d7e6f0a1b"
CANARY_JSON = orjson.dumps({"password": CANARY, "user": "app"}).decode()


def leaks(text: str | bytes) -> list[str]:
    """Every form of the canary found in `text` (empty when clean)."""
    data = text.encode() if isinstance(text, str) else text
    forms = {
        "plain": CANARY.encode(),
        "base64": base64.b64encode(CANARY.encode()),
        "json-base64": base64.b64encode(CANARY_JSON.encode()),
        "hex": CANARY.encode().hex().encode(),
    }
    return [label for label, form in forms.items() if form in data]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    yield stream
    structlog.reset_defaults()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_debug_logs_redact_values_bytes_and_exceptions(fmt: str, log_stream: io.StringIO) -> None:
    configure_logging("debug", fmt, stream=log_stream)
    log = structlog.get_logger("canary")
    value = SecretValue(CANARY.encode())
    log.debug("secret.fetched", value=value, raw=CANARY.encode(), buffer=bytearray(CANARY, "ascii"))
    log.info("secret.listed", values=[value], mapping={"v": value})
    log.info("secret.nested", items=[CANARY.encode()], deep={"a": ({"b": [CANARY.encode()]},)})
    deep: object = CANARY.encode()
    for _ in range(20):
        deep = [deep]
    log.info("secret.deep", deep=deep)
    log.info("secret.formatted", text=f"{value}", repr=repr(value), str=str(value))
    try:
        raise ValueError(value)
    except ValueError:
        log.exception("secret.failed")
    output = log_stream.getvalue()
    assert "secret.fetched" in output and "secret.failed" in output
    assert leaks(output) == []


def test_error_messages_never_echo_values_or_bad_names() -> None:
    json_value = SecretValue(CANARY_JSON.encode())
    plain_value = SecretValue(CANARY.encode())
    messages: list[str] = []
    for attempt in (
        lambda: json_value.field("missing"),
        lambda: plain_value.field("password"),
        lambda: SecretName(CANARY + " with a space"),
        lambda: SecretName("/" + CANARY),
        lambda: SecretName(CANARY * 20),
    ):
        with pytest.raises(SecretdError) as info:
            attempt()
        assert isinstance(info.value, InvalidName | InvalidRequest)
        messages.extend([str(info.value), repr(info.value), info.value.message])
    assert leaks("\n".join(messages)) == []


def test_secret_value_cannot_be_serialised() -> None:
    value = SecretValue(CANARY.encode())
    with pytest.raises(TypeError):
        pickle.dumps(value)
    with pytest.raises(TypeError):
        orjson.dumps({"v": value})
    assert leaks(repr(value) + str(value) + f"{value!r}{value:>10}") == []


def test_audit_lines_carry_no_value(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog.open(str(path))
    caller = Caller(uid=1, gid=1, pid=1, unit="app.service")
    value = SecretValue(CANARY.encode())
    audit.record("read", secret="db/app", version_id="v1", caller=caller, result="ok")
    audit.record("deny", secret=CANARY + "/../x", version_id=None, caller=caller, result="deny")
    audit.secret_refreshed(SecretName("db/app"), "local", "v2", "changed")
    for bad in (value, CANARY.encode()):
        with pytest.raises(TypeError):
            audit.record(
                "read", secret="db/app", version_id=None, caller=None, result="ok", detail=bad
            )  # type: ignore[arg-type]
    audit.close()
    assert leaks(path.read_bytes()) == []
    assert len(path.read_bytes().splitlines()) == 3


def test_metrics_carry_no_value_or_unpinned_name() -> None:
    metrics = Metrics()
    probe = SecretName("probe/" + CANARY)

    class Entry:
        name, age_seconds, pinned = probe, 1.0, False

    metrics.read(CANARY)
    metrics.cache_lookup(CANARY)
    metrics.backend_call("local", CANARY, 0.01, True)
    metrics.secret_refreshed(probe, "local", CANARY, CANARY)
    metrics.render(CANARY, CANARY)
    metrics.set_secret_ages([Entry()])
    assert leaks(metrics.exposition()) == []

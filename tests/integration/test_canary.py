"""The canary: a known secret value must never appear where values do not belong.

Component level: the log pipeline at debug level in both formats, error
messages, the audit writer and the metrics exposition, each fed the canary the
ways a careless caller might.

End to end: a real `secretd agent` (debug logs, audit on) serves a store
holding the canary; the test drives reads, fields, raw, errors, denials (a
second uid), listing, refresh, rotation with a long-poll, a tampered record,
health, metrics, `secretd status`/`get`/`store`, and SIGTERM, then searches
every output that must not carry a value for the value, its base64 and hex.
Positive controls show the value *is* found where it belongs.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import os
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
from tests.servers.canary_agent import AgentProcess, file_store_config, running_agent
from tests.servers.second_user import ensure_test_user, needs_root

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


# --- end to end: a real agent process ----------------------------------------

CANARY2 = "CANARY2-6a0e2f71-rotated-3d9c"
PASTED = "PASTED-0c7b5e2a-not-a-name"
CANARY_PLAIN_B64 = base64.b64encode(b"\xff\xfe" + CANARY.encode()).decode()
ROTATED_JSON = orjson.dumps({"password": CANARY2, "user": "app"}).decode()

AGENT_KEYS = """socket_mode = "0666"
log_level = "debug"
log_format = "$log_format"
audit_log = "$root/audit.jsonl"
"""
AGENT_CONFIG = file_store_config(
    agent=AGENT_KEYS,
    rest="""[[secret]]
name = "db/app"

[[allow]]
secrets = ["db/*", "canary/*"]
uids = [0]

[[template]]
contents = "password={{ secret('db/app', field='password') }}\\n"
destination = "$root/app.conf"

[[template]]
contents = "{{ secret('db/app', field='no-such-field') }}"
destination = "$root/broken.conf"
""",
)

needs_agent = pytest.mark.skipif(
    importlib.util.find_spec("secretd.app") is None, reason="the agent is not built yet"
)


def every_leak(text: str | bytes) -> list[str]:
    """`leaks` for the first value, the rotated one, and a value pasted as a name."""
    data = text.encode() if isinstance(text, str) else text
    found = leaks(data)
    for label, secret in (("rotated", CANARY2), ("pasted", PASTED)):
        for form in (secret.encode(), base64.b64encode(secret.encode())):
            if form in data:
                found.append(label)
    if CANARY_PLAIN_B64.encode() in data:
        found.append("binary-base64")
    if base64.b64encode(ROTATED_JSON.encode()) in data:
        found.append("rotated-json-base64")
    return found


def reads_that_hand_out_values(agent: AgentProcess) -> str:
    """Positive controls: where the value belongs, it is there. Returns the old version."""
    doc = orjson.loads(agent.request("/v1/secrets/db/app").body)
    assert CANARY in doc["value"]
    assert orjson.loads(agent.request("/v1/secrets/db/app?field=password").body)["value"] == CANARY
    assert agent.request("/v1/secrets/db/app?field=password&format=raw").body == CANARY.encode()
    assert agent.request("/v1/secrets/canary/plain?format=raw").body == CANARY.encode()
    binary_body = agent.request("/v1/secrets/canary/binary").body
    assert orjson.loads(binary_body)["value_b64"] == CANARY_PLAIN_B64
    assert every_leak(binary_body) == ["binary-base64"]  # the detector sees encoded forms
    aws = orjson.loads(agent.request("/secretsmanager/get?secretId=db/app").body)
    assert CANARY in aws["SecretString"]
    got = agent.cli("get", "db/app", "--field", "password")
    assert got.stdout.strip() == CANARY.encode(), got.stderr
    refreshed = agent.request("/v1/secrets/db/app?refresh=true")
    assert CANARY.encode() in refreshed.body
    return str(doc["version_id"])


def outputs_without_values(agent: AgentProcess) -> list[tuple[str, bytes]]:
    """Every answer that must not carry a value: errors, lists, health, metrics."""
    paths = [
        "/v1/secrets/db/app?field=no-such-field",
        "/v1/secrets/canary/plain?field=password",
        "/v1/secrets/canary/binary?field=password",
        "/v1/secrets/db/missing",
        "/v1/secrets/db/app?bogus=1",
        "/v1/secrets/db/app?field=password&field=user",
        "/v1/secrets/db/app?version=no-such-version",
        "/v1/secrets/db/app?stage=pending",
        "/v1/secrets/db/app?wait=forever&index=x",
        f"/v1/secrets/db/{PASTED}!",
        f"/v1/secrets/{PASTED}/..",
        "/v1/secrets?prefix=",
        "/v1/secrets?prefix=db/",
        "/v1/health",
        "/metrics",
        "/secretsmanager/get?secretId=db/missing",
        "/secretsmanager/get?secretId=db/app&versionStage=AWSPENDING",
        f"/secretsmanager/get?secretId={PASTED}!",
    ]
    out = [(path, agent.request(path).body) for path in paths]
    out.append(("POST", agent.request("/v1/secrets/db/app", method="POST").body))
    for args in (
        ("status",),
        ("status", "--json"),
        ("get", "db/app", "--field", "no-such-field"),
        ("get", "db/missing"),
        ("store", "list", str(agent.store)),
        ("store", "history", str(agent.store), "db/app", "--key", str(agent.key)),
    ):
        done = agent.cli(*args)
        out.append((" ".join(args), done.stdout + done.stderr))
    return out


def denied_outputs(agent: AgentProcess) -> list[tuple[str, bytes]]:
    """A second uid is refused, identically for existing and missing names."""
    user = ensure_test_user()
    existing = agent.request_as(user, "/v1/secrets/db/app")
    missing = agent.request_as(user, "/v1/secrets/db/missing")
    assert existing.status == missing.status == 403
    assert existing.body == missing.body.replace(b"db/missing", b"db/app")
    listing = agent.request_as(user, "/v1/secrets?prefix=")
    aws = agent.request_as(user, "/secretsmanager/get?secretId=db/app")
    assert aws.status >= 400
    return [
        ("deny existing", existing.body),
        ("deny missing", missing.body),
        ("deny list", listing.body),
        ("deny aws", aws.body),
    ]


def rotate_and_tamper(agent: AgentProcess, old_version: str) -> list[tuple[str, bytes]]:
    """Rotation reaches a long-poll; a tampered record errors without a value."""
    agent.put("db/app", ROTATED_JSON.encode())
    polled = orjson.loads(agent.request(f"/v1/secrets/db/app?wait=10s&index={old_version}").body)
    assert CANARY2 in polled["value"]
    previous = orjson.loads(agent.request("/v1/secrets/db/app?stage=previous").body)
    assert CANARY in previous["value"]
    record = agent.store / "secrets" / (hashlib.sha256(b"canary/tamper").hexdigest() + ".secret")
    document = orjson.loads(record.read_bytes())
    blob = document["versions"][0]["ciphertext"]
    document["versions"][0]["ciphertext"] = ("A" if blob[0] != "A" else "B") + blob[1:]
    staged = record.with_suffix(".tmp")
    staged.write_bytes(orjson.dumps(document))
    os.replace(staged, record)
    tampered = agent.request("/v1/secrets/canary/tamper?refresh=true")
    return [("tampered", tampered.body)]


def process_outputs(agent: AgentProcess) -> list[tuple[str, bytes]]:
    """The agent's own argv and environment; and it reports itself hardened."""
    proc_dir = Path(f"/proc/{agent.proc.pid}")
    health = orjson.loads(agent.request("/v1/health").body)
    assert health["hardening"]["non_dumpable"] is True
    assert health["hardening"]["no_core"] is True
    assert b'secretd_hardening{feature="non_dumpable"} 1.0' in agent.request("/metrics").body
    return [
        ("agent argv", (proc_dir / "cmdline").read_bytes()),
        ("agent environ", (proc_dir / "environ").read_bytes()),
    ]


@needs_agent
@pytest.mark.timeout(180)  # a dozen CLI processes and an agent, on a shared machine
@needs_root
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_value_reaches_logs_audit_metrics_errors_health_or_status(log_format: str) -> None:
    values = [
        ("db/app", CANARY_JSON.encode()),
        ("canary/plain", CANARY.encode()),
        ("canary/binary", b"\xff\xfe" + CANARY.encode()),
        ("canary/tamper", CANARY.encode()),
    ]
    config = AGENT_CONFIG.replace("$log_format", log_format)
    with running_agent(config, values) as agent:
        assert CANARY.encode() in (agent.root / "app.conf").read_bytes()  # rendered on purpose
        old_version = reads_that_hand_out_values(agent)
        outputs = outputs_without_values(agent)
        outputs += denied_outputs(agent)
        outputs += rotate_and_tamper(agent, old_version)
        outputs += outputs_without_values(agent)  # health/status/metrics after rotation
        outputs += process_outputs(agent)
        assert agent.stop() == 0
        logs = agent.logs()
        outputs.append(("agent log", logs))
        outputs.append(("audit", agent.audit_path.read_bytes()))
        audit = [orjson.loads(line) for line in agent.audit_path.read_bytes().splitlines()]
    assert b"debug" in logs and b"secret.loaded" in logs, "debug logging was not on"
    assert {"read", "deny", "refresh"} <= {line["event"] for line in audit}
    denier = ensure_test_user().uid
    assert any(ln["event"] == "deny" and ln["caller"]["uid"] == denier for ln in audit)
    found = {label: every_leak(body) for label, body in outputs if every_leak(body)}
    assert found == {}


# --- render errors: a value used as a name, field or stage ----------------------

# Each template makes a value (private/x holds the canary) flow into an argument
# that an error message might quote: a field, a name, a stage, a key.
RENDER_CONFIG = file_store_config(
    agent=AGENT_KEYS.replace("$log_format", "json"),
    rest='[[allow]]\nsecrets = ["app/*"]\nuids = [0]\n',
) + "".join(
    f'\n[[template]]\ncontents = "{source}"\ndestination = "$root/t{index}.conf"\n'
    for index, source in enumerate(
        [
            "{{ secret('app/db', field=secret('private/x')) }}",
            "{{ secret(secret('private/x')) }}",
            "{{ secret('app/db', stage=secret('private/x')) }}",
            "{{ secret_json(secret('private/x')) }}",
            "{{ secret('app/plain', field=secret('private/x')) }}",
            "{{ secret_json('app/db')[secret('private/x')] }}",
            "{{ secret('private/x') | int + {}[secret('private/x')] }}",
            "{% set n = secret('private/x') %}{{ secret(n ~ '') }}",
        ]
    )
)


@needs_agent
@pytest.mark.timeout(120)
@needs_root
def test_render_errors_never_carry_a_value_from_a_name_field_or_stage() -> None:
    values = [
        ("private/x", CANARY.encode()),
        ("app/db", CANARY_JSON.encode().replace(CANARY.encode(), b"pw")),
        ("app/plain", b"not json"),
    ]
    user = ensure_test_user()
    with running_agent(RENDER_CONFIG, values) as agent:
        health = orjson.loads(agent.request("/v1/health").body)
        failed = [t for t in health["templates"] if not t["ok"]]
        assert len(failed) == 8, health["templates"]  # every template failed, as it should
        outputs = [
            ("health", agent.request("/v1/health").body),
            ("health as user", agent.request_as(user, "/v1/health").body),
        ]
        for args in (("status",), ("status", "--json")):
            done = agent.cli(*args)
            outputs.append((" ".join(args), done.stdout + done.stderr))
        assert agent.stop() == 0
        outputs.append(("agent log", agent.logs()))
        outputs.append(("audit", agent.audit_path.read_bytes()))
        audit = [orjson.loads(line) for line in agent.audit_path.read_bytes().splitlines()]
    renders = [line for line in audit if line["event"] == "render"]
    assert len(renders) >= 8 and all(line["result"] == "error" for line in renders)
    found = {label: every_leak(body) for label, body in outputs if every_leak(body)}
    assert found == {}

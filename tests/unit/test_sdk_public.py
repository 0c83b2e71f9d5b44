"""The SDK's public surface, models, errors and wire rules (no I/O)."""

from __future__ import annotations

import importlib
import types
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import secretd_client
from secretd_client import _wire
from secretd_client._errors import error_for

CANARY = "canary-Zq8v1-value"


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, item in vars(secretd_client).items()
        if not name.startswith("_") and not isinstance(item, types.ModuleType)
    }
    assert public == set(secretd_client.__all__) - {"__version__"}
    for name in secretd_client.__all__:
        assert hasattr(secretd_client, name), name


def test_testing_module_exports_static_secrets_only() -> None:
    testing = importlib.import_module("secretd_client.testing")
    assert testing.__all__ == ["StaticSecrets"]


def test_package_is_typed() -> None:
    assert (Path(secretd_client.__file__).parent / "py.typed").is_file()


def _secret(value: str | bytes) -> secretd_client.Secret:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return secretd_client.Secret("db/app", "v1", frozenset({"current"}), moment, value)


@pytest.mark.parametrize("value", [CANARY, CANARY.encode()])
def test_secret_never_shows_its_value(value: str | bytes) -> None:
    secret = _secret(value)
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret])):
        assert CANARY not in text
        assert "hidden" in text


def test_secret_conversions_and_api_shape() -> None:
    text, binary = _secret("pä"), _secret(b"\xff\x00")
    assert text.as_bytes() == "pä".encode()
    assert text.as_text() == "pä"
    assert binary.as_bytes() == b"\xff\x00"
    with pytest.raises(UnicodeDecodeError):
        binary.as_text()
    assert text.to_api_dict()["value"] == "pä"
    assert binary.to_api_dict()["value_b64"] == "/wA="
    assert text.to_api_dict()["created_at"] == "2026-01-02T03:04:05.000Z"


def test_resolve_socket_order() -> None:
    resolve = secretd_client.resolve_socket
    env = {"SECRETD_SOCKET": "/tmp/e.sock", "XDG_RUNTIME_DIR": "/run/user/5"}
    assert resolve("/tmp/arg.sock", environ=env, euid=5) == "/tmp/arg.sock"
    assert resolve(Path("/tmp/p.sock"), environ=env, euid=5) == "/tmp/p.sock"
    assert resolve(None, environ=env, euid=5) == "/tmp/e.sock"
    assert resolve(None, environ={"XDG_RUNTIME_DIR": "/run/user/5"}, euid=5) == (
        "/run/user/5/secretd.sock"
    )
    assert resolve(None, environ={"XDG_RUNTIME_DIR": "/run/user/0"}, euid=0) == (
        "/run/secretd/secretd.sock"
    )
    assert resolve(None, environ={}, euid=5) == "/run/secretd/secretd.sock"
    assert resolve("", environ={"SECRETD_SOCKET": ""}, euid=0) == "/run/secretd/secretd.sock"


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, "invalid_name", secretd_client.InvalidName),
        (400, "invalid_request", secretd_client.InvalidRequest),
        (401, "bad_token", secretd_client.Unauthorized),
        (403, "forbidden", secretd_client.Forbidden),
        (404, "not_found", secretd_client.NotFound),
        (413, "too_large", secretd_client.TooLarge),
        (429, "rate_limited", secretd_client.RateLimited),
        (503, "backend_unavailable", secretd_client.BackendUnavailable),
        (504, "backend_timeout", secretd_client.BackendTimeout),
        (500, "store_error", secretd_client.ServerError),
        (404, None, secretd_client.NotFound),  # no code: by status
        (502, "weird", secretd_client.ServerError),
        (418, "weird", secretd_client.InvalidRequest),
    ],
)
def test_errors_map_from_code_then_status(status: int, code: str | None, kind: type) -> None:
    error = error_for(status, code, "db/app: why")
    assert type(error) is kind
    assert isinstance(error, secretd_client.SecretdClientError)
    assert error.status == status
    assert str(error) == "db/app: why"


@pytest.mark.parametrize(
    "name",
    ["", "/a", "a/", "a//b", "a/./b", "a/../b", "..", "a b", "a?b", "a#b", "a%2e", "x" * 513],
)
def test_bad_names_are_refused_before_sending(name: str) -> None:
    with pytest.raises(secretd_client.InvalidName):
        _wire.secret_path(name)


def test_name_errors_do_not_echo_the_input() -> None:
    # a caller may paste a value where a name belongs
    with pytest.raises(secretd_client.InvalidName) as info:
        _wire.secret_path(CANARY + " x")
    assert CANARY not in str(info.value)


@given(st.text(min_size=1, max_size=40))
def test_every_accepted_name_maps_to_its_own_path(name: str) -> None:
    try:
        path = _wire.secret_path(name)
    except secretd_client.InvalidName:
        return
    # what the server decodes is exactly the name asked for: no normalisation
    url = httpx.URL("http://secretd" + path)
    assert url.path == "/v1/secrets/" + name


def test_params_refuse_contradictions() -> None:
    with pytest.raises(secretd_client.InvalidRequest):
        _wire.secret_params(stage="previous", version="v1")
    with pytest.raises(secretd_client.InvalidRequest):
        _wire.secret_params(wait=5, stage="previous")
    with pytest.raises(secretd_client.InvalidRequest):
        _wire.secret_params(field="")
    with pytest.raises(secretd_client.InvalidRequest):
        _wire.secret_params(wait=0)
    params = _wire.secret_params(field="f", refresh=True)
    assert params == {"field": "f", "refresh": "true"}
    assert _wire.secret_params(wait=30, index="v2") == {"wait": "30s", "index": "v2"}
    assert _wire.secret_params(wait=0.25)["wait"] == "250ms"


def test_backoff_grows_with_jitter_and_stays_bounded() -> None:
    import random

    backoff, rng = secretd_client.Backoff(initial=0.1, maximum=2.0), random.Random(7)
    delays = [backoff.delay(n, rng) for n in range(40)]
    assert all(0.05 <= d <= 2.0 for d in delays)
    assert delays[0] <= 0.1
    assert min(delays[10:]) >= 1.0


def _response(status: int, body: bytes) -> httpx.Response:
    return httpx.Response(status, content=body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'"text"',
        b'{"name": "db/app"}',
        b'{"name": "db/app", "version_id": "v1", "stages": ["current"], "created_at": "x", '
        b'"value": "' + CANARY.encode() + b'"}',
        b'{"name": "db/app", "version_id": "v1", "stages": "current", '
        b'"created_at": "2026-01-01T00:00:00Z", "value": "' + CANARY.encode() + b'"}',
        b'{"name": "db/app", "version_id": 1, "stages": [], '
        b'"created_at": "2026-01-01T00:00:00Z", "value": "v"}',
        b'{"name": "db/app", "version_id": "v1", "stages": [], '
        b'"created_at": "2026-01-01T00:00:00Z", "value_b64": "!!notb64"}',
        b'{"name": "db/app", "version_id": "v1", "stages": [], '
        b'"created_at": "2026-01-01T00:00:00Z", "value": "v", "stale": "no"}',
    ],
)
def test_malformed_secret_answers_are_protocol_errors_without_values(body: bytes) -> None:
    with pytest.raises(secretd_client.ProtocolError) as info:
        _wire.parse_secret(_response(200, body), "db/app")
    assert CANARY not in str(info.value)
    assert "db/app" in str(info.value)


def test_an_answer_for_another_secret_is_refused() -> None:
    body = (
        b'{"name": "db/other", "version_id": "v1", "stages": ["current"], '
        b'"created_at": "2026-01-01T00:00:00Z", "value": "x"}'
    )
    assert _wire.parse_secret(_response(200, body), "db/other").name == "db/other"
    with pytest.raises(secretd_client.ProtocolError, match="another secret"):
        _wire.parse_secret(_response(200, body), "db/app")


def test_error_bodies_map_and_hostile_messages_are_flattened() -> None:
    body = b'{"error": {"code": "forbidden", "message": "no\\n\\u001b[31mred' + b"x" * 500 + b'"}}'
    with pytest.raises(secretd_client.Forbidden) as info:
        _wire.parse_secret(_response(403, body), "db/app")
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message
    assert len(message) < 400
    with pytest.raises(secretd_client.ServerError):
        _wire.parse_secret(_response(500, b"<html>oops</html>"), "db/app")
    with pytest.raises(secretd_client.NotFound):
        _wire.parse_secret(_response(404, b'{"error": "flat"}'), "db/app")


def test_health_answers_parse_even_while_starting() -> None:
    body = (
        b'{"status": "starting", "backends": {"local": {"ok": false, "last_error": "boom", '
        b'"last_success": null}, "odd": 5}, "cache": {"entries": 3, "stale": true}, '
        b'"templates": [{"destination": "/run/a", "ok": false, "last_error": "e"}, 7]}'
    )
    health = _wire.parse_health(_response(503, body), "health")
    assert health.status == "starting" and not health.ok
    assert health.backends["local"].last_error == "boom"
    assert set(health.backends) == {"local"}
    assert health.cache_entries == 3 and health.cache_stale == 0
    assert health.templates[0].destination == "/run/a"
    with pytest.raises(secretd_client.BackendUnavailable):
        _wire.parse_health(_response(503, b"down"), "health")
    with pytest.raises(secretd_client.ProtocolError):
        _wire.parse_health(_response(200, b"{}"), "health")


def test_list_answers_are_validated() -> None:
    good = b'{"secrets": [{"name": "a", "version_id": "v1", "age_seconds": 3}, {"name": "b"}]}'
    rows = _wire.parse_list(_response(200, good), "list")
    assert rows[0] == secretd_client.SecretInfo("a", "v1", 3.0, None)
    assert rows[1].version_id is None
    for bad in (b"{}", b'{"secrets": [{"version_id": "v1"}]}', b'{"secrets": [1]}'):
        with pytest.raises(secretd_client.ProtocolError):
            _wire.parse_list(_response(200, bad), "list")


def test_the_sdk_touches_no_private_names_of_httpx_or_httpcore() -> None:
    """httpx and httpcore may change their internals in any release: the SDK
    uses only what they export (no `httpcore._backends`, no `transport._pool`)."""
    import ast

    root = Path(secretd_client.__file__).parent
    libraries = {"httpx", "httpcore"}
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] in libraries:
                    assert not any(p.startswith("_") for p in parts), f"{path.name}: {node.module}"
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in libraries
            ):
                assert not node.attr.startswith("_"), f"{path.name}: {node.value.id}.{node.attr}"
            if isinstance(node, ast.Attribute) and node.attr == "_pool":
                raise AssertionError(f"{path.name}: reaches into a transport's _pool")


def test_a_user_without_an_own_agent_finds_the_system_socket() -> None:
    """Non-root with $XDG_RUNTIME_DIR: the user's socket if there is one, else the
    packaged agent's; explicit choices are never second-guessed."""
    resolve = secretd_client.resolve_socket
    env = {"XDG_RUNTIME_DIR": "/run/user/5"}
    mine = "/run/user/5/secretd.sock"
    assert resolve(
        None, environ=env, euid=5, exists=lambda p: p == "/run/secretd/secretd.sock"
    ) == ("/run/secretd/secretd.sock")
    assert resolve(None, environ=env, euid=5, exists=lambda p: True) == mine
    assert resolve(None, environ=env, euid=5, exists=lambda p: False) == mine
    chosen = {"SECRETD_SOCKET": "/tmp/e.sock", **env}
    assert resolve(None, environ=chosen, euid=5, exists=lambda p: False) == "/tmp/e.sock"
    assert secretd_client.socket_candidates(None, environ=env, euid=5) == [
        mine,
        "/run/secretd/secretd.sock",
    ]

"""Pure parts of the client commands: --env specs, signals, exit status, the
status table."""

from __future__ import annotations

import signal

import pytest

from secretd.cli.client_exec import EnvSpec, exit_status, parse_signal, parse_specs
from secretd.cli.client_status import age, clean, render_status, status_document
from secretd.errors import UsageError
from secretd_client import BackendHealth, Health, SecretInfo, TemplateHealth


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("PW=db/app", EnvSpec("PW", "db/app")),
        ("PW=db/app#password", EnvSpec("PW", "db/app", "password")),
        ("_x1=a#b#c", EnvSpec("_x1", "a", "b#c")),
    ],
)
def test_env_specs_parse(text: str, spec: EnvSpec) -> None:
    assert EnvSpec.parse(text) == spec


@pytest.mark.parametrize(
    "text", ["PW", "=db/app", "1PW=db/app", "P-W=db/app", "PW=", "PW=a/../b", "PW=db#", "P W=x"]
)
def test_bad_env_specs_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        EnvSpec.parse(text)


def test_duplicate_variables_are_refused() -> None:
    with pytest.raises(UsageError, match="twice"):
        parse_specs(["A=x", "A=y"])


@pytest.mark.parametrize(
    ("text", "sig"),
    [
        ("HUP", signal.SIGHUP),
        ("sighup", signal.SIGHUP),
        ("10", signal.SIGUSR1),
        ("USR2", signal.SIGUSR2),
    ],
)
def test_signals_parse(text: str, sig: signal.Signals) -> None:
    assert parse_signal(text) == sig


@pytest.mark.parametrize("text", ["NOPE", "999", "", "SIG"])
def test_bad_signals_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_signal(text)


def test_exit_status_follows_the_shell_convention() -> None:
    assert exit_status(0) == 0
    assert exit_status(3) == 3
    assert exit_status(-signal.SIGTERM) == 143
    assert exit_status(-signal.SIGKILL) == 137


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.4, "0s"), (59, "59s"), (61, "1m01s"), (3725, "1h02m"), (90000, "1d01h")],
)
def test_age(seconds: float | None, text: str) -> None:
    assert age(seconds) == text


def test_clean_flattens_and_bounds() -> None:
    assert clean("a\nb\x1b[31m") == "a b [31m"
    assert len(clean("x" * 500)) == 120


def _health() -> Health:
    return Health(
        status="degraded",
        backends={"vault": BackendHealth(False, "timed out\nreading", None)},
        cache_entries=2,
        cache_stale=1,
        templates=(TemplateHealth("/run/app.conf", True, None, "2026-01-01T00:00:00.000Z"),),
        raw={
            "status": "degraded",
            "hardening": {
                "non_dumpable": True,
                "no_core": True,
                "mlock": None,
                "problems": {"mlock": "RLIMIT_MEMLOCK\ttoo low"},
            },
        },
    )


def test_status_table_shows_everything_but_values() -> None:
    rows = [SecretInfo("db/app", "v3", 75.0, True), SecretInfo("x", None, None, None)]
    text = render_status("/tmp/s.sock", _health(), rows, None)
    assert "agent:     degraded" in text
    assert "timed out reading" in text  # flattened to one line
    assert "db/app  v3       1m15s  STALE" in text
    assert "/run/app.conf" in text and "2026-01-01T00:00:00.000Z" in text
    assert "hardening: non_dumpable yes, no_core yes, mlock off" in text
    assert "  mlock: RLIMIT_MEMLOCK too low" in text
    assert text.endswith("\n") and "\n\n\n" not in text


def test_status_table_when_listing_failed_or_empty() -> None:
    empty = Health(status="ok", backends={})
    text = render_status("/s", empty, None, "forbidden")
    assert "secrets: not listed: forbidden" in text
    assert "backends: none" in text and "templates: none" in text
    assert "secrets: none" in render_status("/s", empty, [], None)


def test_status_document() -> None:
    rows = [SecretInfo("db/app", "v3", 1.5, False)]
    document = status_document("/s", _health(), rows, None)
    assert document["health"]["status"] == "degraded"
    assert document["secrets"] == [
        {"name": "db/app", "version_id": "v3", "age_seconds": 1.5, "stale": False}
    ]

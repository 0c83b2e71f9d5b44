"""How `secretd status` shows the agent: a readable table, or a JSON document.

Only what `/v1/health`, `/v1/secrets` and `/v1/rotation` report: backends,
names the caller may read with version, age and staleness, templates,
rotations (last and next) and last errors. Never values. The agent cuts
health to the caller: run by anyone but root (or the agent's own user) the
errors are summaries naming only secrets the caller may read, and the table
says so.
Every string from the agent is flattened to one printable line, so a confused
or hostile peer cannot paint the operator's terminal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from secretd_client import Health, SecretInfo

_MAX_CELL = 120


def status_document(
    socket: str, health: Health, secrets: Sequence[SecretInfo] | None, list_error: str | None
) -> dict[str, Any]:
    """The `--json` form: the health document as the agent sent it, plus the listing."""
    return {
        "socket": socket,
        "health": dict(health.raw),
        "secrets": None if secrets is None else [dataclasses.asdict(row) for row in secrets],
        "secrets_error": list_error,
    }


def render_status(
    socket: str, health: Health, secrets: Sequence[SecretInfo] | None, list_error: str | None
) -> str:
    lines = [
        f"agent:     {clean(health.status)}",
        f"socket:    {clean(socket)}",
        f"cache:     {health.cache_entries} entries, {health.cache_stale} stale",
        *_hardening(health.raw.get("hardening")),
        *_detail(health.raw.get("detail")),
        "",
    ]
    backend_rows = [
        [
            clean(name),
            _backend_state(health.raw, name, b.ok),
            _endpoint(health.raw, name),
            clean(b.last_success or "-"),
            clean(b.last_error or "-"),
        ]
        for name, b in sorted(health.backends.items())
    ]
    header = ["NAME", "OK", "ENDPOINT", "LAST SUCCESS", "LAST ERROR"]
    lines += _section("backends", header, backend_rows)
    if secrets is None:
        lines += ["secrets: not listed: " + clean(list_error or "unknown error"), ""]
    else:
        secret_rows = [
            [clean(row.name), clean(row.version_id or "-"), age(row.age_seconds), _stale(row)]
            for row in secrets
        ]
        lines += _section("secrets", ["NAME", "VERSION", "AGE", "STALE"], secret_rows)
    template_rows = [
        [
            clean(t.destination),
            _yes(t.ok),
            clean(t.last_rendered or "-"),
            clean(t.last_error or "-"),
        ]
        for t in health.templates
    ]
    lines += _section(
        "templates", ["DESTINATION", "OK", "LAST RENDERED", "LAST ERROR"], template_rows
    )
    return "\n".join(lines).rstrip("\n") + "\n"


def render_rotations(rows: Sequence[dict[str, Any]] | None, error: str | None) -> str:
    """The rotations section: last rotation, its result and the next due time."""
    if rows is None:
        return "\nrotations: not listed: " + clean(error or "unknown error") + "\n"
    table_rows = [
        [
            clean(str(row.get("name"))),
            clean(str(row.get("rotator"))),
            clean(str(row.get("last_rotated_at") or "never")),
            _rotation_result(row),
            clean(str(row.get("next_at") or "-")),
            clean(str(row.get("last_error") or "-")),
        ]
        for row in rows
    ]
    header = ["NAME", "ROTATOR", "LAST ROTATED", "RESULT", "NEXT", "LAST ERROR"]
    return "\n" + "\n".join(_section("rotations", header, table_rows)).rstrip("\n") + "\n"


def _rotation_result(row: dict[str, Any]) -> str:
    if row.get("running"):
        return "running"
    result = row.get("last_result")
    return "FAILED" if result == "failed" else clean(str(result or "-"))


def _endpoint(raw: Any, name: str) -> str:
    """The Vault address / AWS region serving `name`, "(replica)" when it is not
    the first configured one; "-" for backends without endpoints."""
    backends = raw.get("backends") if isinstance(raw, dict) else None
    entry = backends.get(name) if isinstance(backends, dict) else None
    if not isinstance(entry, dict):
        return "-"
    endpoint, primary = entry.get("endpoint"), entry.get("on_primary")
    shown = clean(str(endpoint)) if endpoint else ("primary" if primary else "-")
    if primary is False:
        shown = "replica" if not endpoint else f"{shown} (replica)"
    return shown


def _hardening(report: object) -> list[str]:
    """`hardening: non_dumpable yes, no_core yes, mlock off` and any problems."""
    if not isinstance(report, dict):
        return []
    words = {True: "yes", False: "NO", None: "off"}
    flags = [
        f"{clean(str(key))} {words.get(value, '?') if isinstance(value, bool | None) else '?'}"
        for key, value in report.items()
        if key != "problems"
    ]
    lines = ["hardening: " + ", ".join(flags)]
    problems = report.get("problems")
    if isinstance(problems, dict):
        lines += [f"  {clean(str(k))}: {clean(str(v))}" for k, v in sorted(problems.items())]
    return lines


def _detail(detail: object) -> list[str]:
    if detail != "summary":
        return []
    return [
        "errors:    summarised for this user (codes, and only secrets it may read); "
        "run as root for the full texts"
    ]


def _section(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return [f"{title}: none", ""]
    return [f"{title}:", *table([header, *rows]), ""]


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def age(seconds: float | None) -> str:
    """12s, 4m05s, 3h02m, 2d04h."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def clean(text: str) -> str:
    flat = "".join(ch if ch.isprintable() else " " for ch in str(text))
    return flat if len(flat) <= _MAX_CELL else flat[: _MAX_CELL - 1] + "…"


def _backend_state(raw: Any, name: str, ok: bool) -> str:
    """ "yes", "NO", or "unknown (not yet used)" before the agent has asked it anything
    (an agent that does not say, an older one, is taken at its `ok`)."""
    backends = raw.get("backends") if isinstance(raw, Mapping) else None
    entry = backends.get(name) if isinstance(backends, Mapping) else None
    if isinstance(entry, Mapping) and entry.get("state") == "unknown":
        return "unknown (not yet used)"
    return _yes(ok)


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _stale(row: SecretInfo) -> str:
    return "-" if row.stale is None else ("STALE" if row.stale else "no")

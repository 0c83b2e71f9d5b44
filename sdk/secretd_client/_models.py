"""What the client hands back: `Secret` (value hidden from repr), `SecretInfo`
(one row of a listing, never a value) and `Health`."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["BackendHealth", "Health", "Secret", "SecretInfo", "TemplateHealth"]


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """One version of a secret as the agent served it.

    `value` is `str` when the secret (or the selected field) is UTF-8 text,
    `bytes` otherwise. `repr()` and `str()` never show it.
    """

    name: str
    version_id: str
    stages: frozenset[str]
    created_at: datetime
    value: str | bytes
    stale: bool = False

    def as_bytes(self) -> bytes:
        """The value as bytes (text is UTF-8 encoded)."""
        return self.value.encode("utf-8") if isinstance(self.value, str) else self.value

    def as_text(self) -> str:
        """The value as text; raises UnicodeDecodeError for a binary value."""
        return self.value if isinstance(self.value, str) else self.value.decode("utf-8")

    def to_api_dict(self) -> dict[str, Any]:
        """The API's JSON shape (docs/api.md): `value` for text, `value_b64` for bytes."""
        body: dict[str, Any] = {
            "name": self.name,
            "version_id": self.version_id,
            "stages": sorted(self.stages),
            "created_at": rfc3339(self.created_at),
        }
        if isinstance(self.value, str):
            body["value"] = self.value
        else:
            body["value_b64"] = base64.b64encode(self.value).decode("ascii")
        body["stale"] = self.stale
        return body

    def __repr__(self) -> str:
        return (
            f"Secret(name={self.name!r}, version_id={self.version_id!r}, "
            f"stages={sorted(self.stages)!r}, stale={self.stale!r}, value=<hidden>)"
        )

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """A name the caller may read, with its current version and age; no value."""

    name: str
    version_id: str | None = None
    age_seconds: float | None = None
    stale: bool | None = None


@dataclass(frozen=True, slots=True)
class BackendHealth:
    ok: bool
    last_error: str | None = None
    last_success: str | None = None


@dataclass(frozen=True, slots=True)
class TemplateHealth:
    destination: str
    ok: bool
    last_error: str | None = None
    last_rendered: str | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """`GET /v1/health`: status is ok, degraded or starting.

    `templates` is filled when the agent reports them; `raw` keeps the whole
    answer for fields this client does not model.
    """

    status: str
    backends: Mapping[str, BackendHealth]
    cache_entries: int = 0
    cache_stale: int = 0
    templates: tuple[TemplateHealth, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def rfc3339(moment: datetime) -> str:
    """RFC 3339 with millisecond precision, `Z` for UTC."""
    text = moment.isoformat(timespec="milliseconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text

"""Core value types shared by every layer.

- `SecretName`: a validated secret name (docs/reference/http-api.md).
- `SecretValue`: secret bytes that redact themselves in repr/str and refuse
  serialisation; `reveal()` is the one deliberate way out.
- `Version`: one version of a secret (id, stages, created_at, value).
- `Fetched`: what a backend answers for one read.
- `CachedSecret`: what the cache hands to the API, sinks and credentials.
- `Caller`: who is asking (kernel-verified peer credentials, or TCP).
- `SecretReader`: the protocol through which everything above the cache reads.
"""

from __future__ import annotations

import base64
import hmac
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol

import orjson

from secretd.errors import InvalidName, InvalidRequest

CURRENT = "current"
PREVIOUS = "previous"
PENDING = "pending"

MAX_NAME_LENGTH = 512
_NAME_CHARS = re.compile(r"[A-Za-z0-9/_+=.@\-]+")


class SecretName(str):
    """A secret name: 1-512 chars of ``A-Za-z0-9/_+=.@-`` with no empty, ``.``
    or ``..`` segment and no leading or trailing slash."""

    __slots__ = ()

    def __new__(cls, raw: str) -> SecretName:
        if isinstance(raw, SecretName):
            return raw
        problem = name_problem(raw)
        if problem is not None:
            raise InvalidName(f"invalid secret name: {problem}")
        return super().__new__(cls, raw)


def name_problem(raw: object) -> str | None:
    """Why `raw` is not a valid secret name, or None when it is one.

    The message never echoes the raw input: a caller may paste a value by mistake.
    """
    if not isinstance(raw, str):
        return "a name must be a string"
    if not 1 <= len(raw) <= MAX_NAME_LENGTH:
        return f"a name must be 1-{MAX_NAME_LENGTH} characters"
    if _NAME_CHARS.fullmatch(raw) is None:
        return "a name may only contain A-Z a-z 0-9 / _ + = . @ -"
    if raw.startswith("/") or raw.endswith("/"):
        return "a name may not start or end with '/'"
    if any(seg in ("", ".", "..") for seg in raw.split("/")):
        return "a name may not contain an empty, '.' or '..' segment"
    return None


class SecretValue:
    """Secret bytes. Printing, logging or serialising it shows ``<redacted>``."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)

    def reveal(self) -> bytes:
        """The plaintext bytes: call only where the value is deliberately handed out."""
        return self._data

    def text(self) -> str | None:
        """The value as text when it is valid UTF-8, else None."""
        try:
            return self._data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def b64(self) -> str:
        return base64.b64encode(self._data).decode("ascii")

    def field(self, name: str) -> SecretValue:
        """One top-level key of a JSON-object value; non-strings as JSON text
        (docs/reference/http-api.md)."""
        text = self.text()
        obj: Any = None
        if text is not None:
            try:
                obj = orjson.loads(text)
            except orjson.JSONDecodeError:
                obj = None
        if not isinstance(obj, dict):
            raise InvalidRequest("the secret's value is not a JSON object, so it has no fields")
        if name not in obj:
            raise InvalidRequest(f"the secret has no field {name!r}")
        item = obj[name]
        if isinstance(item, str):
            return SecretValue(item.encode("utf-8"))
        return SecretValue(orjson.dumps(item))

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretValue):
            return NotImplemented
        return hmac.compare_digest(self._data, other._data)

    def __hash__(self) -> int:
        return hash(self._data)

    def __repr__(self) -> str:
        return "<SecretValue redacted>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a SecretValue cannot be pickled")


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC with millisecond precision and a Z suffix."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Version:
    """One version of a secret as a backend reported it."""

    version_id: str
    stages: frozenset[str]
    created_at: datetime
    value: SecretValue

    @property
    def is_current(self) -> bool:
        return CURRENT in self.stages


@dataclass(frozen=True, slots=True)
class Fetched:
    """A backend's answer to one read: the secret it is for and the version."""

    name: SecretName
    version: Version
    arn: str | None = None  # the backend's own identifier of the secret (AWS), checked


@dataclass(frozen=True, slots=True)
class CachedSecret:
    """A version served from the cache, with its freshness."""

    name: SecretName
    version: Version
    stale: bool = False
    fetched_at: float = 0.0  # clock.monotonic() when the backend last confirmed it
    backend: str = ""
    arn: str | None = None  # the backend's own identifier of the secret, when it has one
    # The API's answers built from this very object (a serialised body per
    # route and format), kept with it: the cache hands out the same object for
    # as long as the entry is unchanged, so each answer is serialised once.
    answers: dict[object, bytes] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking. Unix-socket callers come from SO_PEERCRED; TCP callers only
    proved they hold the token."""

    uid: int | None = None
    gid: int | None = None
    pid: int | None = None
    unit: str | None = None
    tcp: bool = False
    extra_gids: frozenset[int] = field(default_factory=frozenset)

    def describe(self) -> dict[str, object]:
        """The audit/log form of the caller."""
        if self.tcp:
            return {"tcp": True}
        return {"uid": self.uid, "gid": self.gid, "pid": self.pid, "unit": self.unit}


class SecretReader(Protocol):
    """Reads secrets through the cache. The API, sinks and credentials use only this."""

    async def read(
        self,
        name: SecretName,
        *,
        stage: str | None = None,
        version_id: str | None = None,
        refresh: bool = False,
    ) -> CachedSecret:
        """The requested version (current by default); raises NotFound,
        BackendError when nothing usable is cached, or InvalidName."""
        ...

"""The secretd API on the wire, without I/O: request paths and parameters,
answer parsing and validation, and the watch loop's decisions and backoff.
`Client` and `AsyncClient` share this so both speak exactly the same protocol.

Parsing never puts a body or a value into an exception message.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from secretd_client._errors import (
    InvalidName,
    InvalidRequest,
    ProtocolError,
    SecretdClientError,
    error_for,
)
from secretd_client._models import BackendHealth, Health, Secret, SecretInfo, TemplateHealth

MAX_NAME_LENGTH = 512
_NAME_CHARS = re.compile(r"[A-Za-z0-9/_+=.@\-]+")
_MAX_MESSAGE = 300
ErrorHook = Callable[[SecretdClientError], None]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter for watch reconnects."""

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (0-based)."""
        ceiling = min(self.maximum, self.initial * self.multiplier ** min(attempt, 32))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class WatchLoop:
    """One watch's decisions, without I/O: what to ask next, and how long to pause
    after a failure or after an answer that brought no new version too early.
    `Client` drives it with time.sleep, `AsyncClient` with asyncio.sleep."""

    def __init__(
        self,
        name: str,
        field: str | None,
        wait: float,
        index: str | None,
        backoff: Backoff,
        on_error: ErrorHook | None,
    ) -> None:
        check_name(name)
        secret_params(field=field, wait=wait)  # bad arguments fail now, not at the first call
        self.name, self.field, self.wait, self.index = name, field, wait, index
        self._backoff, self._on_error = backoff, on_error
        self._rng, self._attempt = random.Random(), 0  # noqa: S311 - jitter, not secrecy

    def request(self) -> tuple[dict[str, str], float | None]:
        """The next call's parameters and long-poll wait (none until a version is known)."""
        if self.index is None:
            return secret_params(field=self.field), None
        return secret_params(field=self.field, wait=self.wait, index=self.index), self.wait

    def failed(self, exc: SecretdClientError) -> float:
        """The pause before retrying after `exc`; raises it when retrying cannot help."""
        if not exc.retryable:
            raise exc
        if self._on_error is not None:
            self._on_error(exc)
        return self._pause()

    def answered(self, secret: Secret, elapsed: float) -> tuple[Secret | None, float]:
        """(`secret` when it is a new version, else None; the pause before the next call).

        A long-poll that returned the same version well before `wait` is a peer
        answering too eagerly: back off instead of spinning."""
        if secret.version_id != self.index:
            self._attempt, self.index = 0, secret.version_id
            return secret, 0.0
        if elapsed < min(self.wait / 2, 1.0):
            return None, self._pause()
        return None, 0.0

    def _pause(self) -> float:
        delay = self._backoff.delay(self._attempt, self._rng)
        self._attempt += 1
        return delay


def check_name(name: object) -> str:
    """The name, or InvalidName (docs/reference/http-api.md). Checked before sending: an HTTP
    client would silently collapse `a/../b` into `b`."""
    problem = None
    if not isinstance(name, str):
        problem = "a name must be a string"
    elif not 1 <= len(name) <= MAX_NAME_LENGTH:
        problem = f"a name must be 1-{MAX_NAME_LENGTH} characters"
    elif _NAME_CHARS.fullmatch(name) is None:
        problem = "a name may only contain A-Z a-z 0-9 / _ + = . @ -"
    elif name.startswith("/") or name.endswith("/"):
        problem = "a name may not start or end with '/'"
    elif any(seg in ("", ".", "..") for seg in name.split("/")):
        problem = "a name may not contain an empty, '.' or '..' segment"
    if problem is not None:
        raise InvalidName(f"invalid secret name: {problem}", status=400)
    assert isinstance(name, str)
    return name


def secret_path(name: str) -> str:
    return "/v1/secrets/" + quote(check_name(name), safe="/+=@")


def secret_params(
    *,
    field: str | None = None,
    stage: str | None = None,
    version: str | None = None,
    refresh: bool = False,
    wait: float | None = None,
    index: str | None = None,
) -> dict[str, str]:
    """Query parameters of `GET /v1/secrets/{name}`; rejects contradictions locally."""
    if stage is not None and version is not None:
        raise InvalidRequest("give either stage or version, not both", status=400)
    if wait is not None and (stage is not None or version is not None or refresh):
        raise InvalidRequest("a watch follows the current version only", status=400)
    params: dict[str, str] = {}
    for key, text in (("field", field), ("stage", stage), ("version", version)):
        if text is not None:
            if text == "":
                raise InvalidRequest(f"{key} may not be empty", status=400)
            params[key] = text
    if refresh:
        params["refresh"] = "true"
    if wait is not None:
        params["wait"] = duration(wait)
        if index is not None:
            params["index"] = index
    return params


def duration(seconds: float) -> str:
    """A duration the agent parses: whole seconds as `30s`, else milliseconds."""
    if seconds <= 0:
        raise InvalidRequest("wait must be positive", status=400)
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{max(1, round(seconds * 1000))}ms"


def raise_for_error(response: httpx.Response, what: str) -> None:
    """Raise the mapped ApiError when `response` is not a success."""
    if response.status_code < 400:
        return
    code, message = None, f"HTTP {response.status_code}"
    body = _json_or_none(response)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        code = err.get("code") if isinstance(err.get("code"), str) else None
        if isinstance(err.get("message"), str):
            message = _printable(err["message"])
    raise error_for(response.status_code, code, f"{what}: {message}")


def parse_secret(response: httpx.Response, what: str) -> Secret:
    """The secret in `response`, which must be for the secret named `what`."""
    raise_for_error(response, what)
    body = _json_object(response, what)
    try:
        value: str | bytes
        if isinstance(body.get("value"), str):
            value = body["value"]
        elif isinstance(body.get("value_b64"), str):
            value = base64.b64decode(body["value_b64"], validate=True)
        else:
            raise ValueError("no value")
        stages = body["stages"]
        if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
            raise ValueError("stages")
        stale = body.get("stale", False)
        if not isinstance(stale, bool):
            raise ValueError("stale")
        if _str(body, "name") != what:
            raise ProtocolError(f"{what}: the agent answered for another secret")
        return Secret(
            name=_str(body, "name"),
            version_id=_str(body, "version_id"),
            stages=frozenset(stages),
            created_at=_timestamp(_str(body, "created_at")),
            value=value,
            stale=stale,
        )
    except (KeyError, ValueError, TypeError, binascii.Error):
        raise ProtocolError(f"{what}: the agent's answer is not a secret") from None


def parse_list(response: httpx.Response, what: str) -> list[SecretInfo]:
    raise_for_error(response, what)
    body = _json_object(response, what)
    rows = body.get("secrets")
    if not isinstance(rows, list):
        raise ProtocolError(f"{what}: the agent's answer has no 'secrets' list")
    infos: list[SecretInfo] = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise ProtocolError(f"{what}: a listed secret has no name")
        infos.append(
            SecretInfo(
                name=row["name"],
                version_id=_opt(row, "version_id", str),
                age_seconds=_age(row),
                stale=_opt(row, "stale", bool),
            )
        )
    return infos


def parse_health(response: httpx.Response, what: str) -> Health:
    """Health answers 503 while starting, with the same body: both are health."""
    body = _json_or_none(response)
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        raise_for_error(response, what)
        raise ProtocolError(f"{what}: the agent's answer has no status")
    backends: dict[str, BackendHealth] = {}
    raw_backends = body.get("backends")
    for name, info in (raw_backends if isinstance(raw_backends, dict) else {}).items():
        if isinstance(info, dict):
            backends[str(name)] = BackendHealth(
                ok=info.get("ok") is True,
                last_error=_opt(info, "last_error", str),
                last_success=_opt(info, "last_success", str),
            )
    cache = body.get("cache") if isinstance(body.get("cache"), dict) else {}
    assert isinstance(cache, dict)
    return Health(
        status=body["status"],
        backends=backends,
        cache_entries=_opt(cache, "entries", int) or 0,
        cache_stale=_opt(cache, "stale", int) or 0,
        templates=_templates(body.get("templates")),
        raw=body,
    )


def _templates(raw: object) -> tuple[TemplateHealth, ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(
        TemplateHealth(
            destination=str(item.get("destination", "?")),
            ok=item.get("ok") is True,
            last_error=_opt(item, "last_error", str),
            last_rendered=_opt(item, "last_rendered", str),
        )
        for item in raw
        if isinstance(item, dict)
    )


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    body = _json_or_none(response)
    if not isinstance(body, dict):
        raise ProtocolError(f"{what}: the agent's answer is not a JSON object")
    return body


def _str(body: dict[str, Any], key: str) -> str:
    item = body[key]
    if not isinstance(item, str):
        raise ValueError(key)
    return item


def _opt(body: dict[str, Any], key: str, kind: type[Any]) -> Any:
    item = body.get(key)
    if kind is int and isinstance(item, bool):
        return None
    return item if isinstance(item, kind) else None


def _age(row: dict[str, Any]) -> float | None:
    for key in ("age_seconds", "age"):
        item = row.get(key)
        if isinstance(item, int | float) and not isinstance(item, bool):
            return float(item)
    return None


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _printable(message: str) -> str:
    """An agent's message, one line, bounded: a hostile peer cannot paint the terminal."""
    clean = "".join(ch if ch.isprintable() else " " for ch in message)
    return clean[:_MAX_MESSAGE]

"""Strict query parsing (docs/api.md): an unknown or repeated parameter is a 400.

Each route names the parameters it accepts; everything else is refused, so a
typo (`?stgae=previous`) never silently returns the current version. Values are
never echoed in messages: a caller may paste a secret into the wrong place.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from multidict import MultiMapping

from secretd.config.types import parse_duration
from secretd.errors import InvalidRequest
from secretd.model import MAX_NAME_LENGTH

# Long-polls are capped so a forgotten client cannot pin a connection forever.
MAX_WAIT_SECONDS = 300.0
MAX_PARAM_LENGTH = 512
_STAGE = re.compile(r"[A-Za-z0-9_.@+=-]{1,128}")
_VERSION = re.compile(r"[A-Za-z0-9_.@+=:/-]{1,256}")
_PREFIX = re.compile(r"[A-Za-z0-9/_+=.@-]*")

SECRET_PARAMS = frozenset({"stage", "version", "field", "format", "refresh", "wait", "index"})
LIST_PARAMS = frozenset({"prefix"})


def single_values(query: MultiMapping[str], allowed: Collection[str]) -> dict[str, str]:
    """The query as a plain dict; 400 for an unknown, repeated or oversized parameter."""
    values: dict[str, str] = {}
    for key, value in query.items():
        if key not in allowed:
            shown = key if len(key) <= 40 and key.isprintable() else "(unprintable)"
            raise InvalidRequest(f"unknown query parameter {shown!r}")
        if key in values:
            raise InvalidRequest(f"query parameter {key!r} given more than once")
        if len(value) > MAX_PARAM_LENGTH:
            raise InvalidRequest(f"query parameter {key!r} is too long")
        values[key] = value
    return values


def parse_bool(key: str, raw: str) -> bool:
    if raw == "true":
        return True
    if raw == "false":
        return False
    raise InvalidRequest(f"query parameter {key!r} must be 'true' or 'false'")


def parse_wait(raw: str) -> float:
    """A duration such as `30s`; values above the cap are lowered to it."""
    try:
        seconds = parse_duration(raw)
    except ValueError:
        raise InvalidRequest("'wait' must be a duration such as '30s' or '5m'") from None
    return min(seconds, MAX_WAIT_SECONDS)


@dataclass(frozen=True, slots=True)
class SecretQuery:
    """The parsed parameters of `GET /v1/secrets/{name}`."""

    stage: str | None = None
    version: str | None = None
    field: str | None = None
    raw: bool = False
    refresh: bool = False
    wait: float | None = None
    index: str | None = None


PLAIN_READ = SecretQuery()


def parse_secret_query(query: MultiMapping[str]) -> SecretQuery:
    if not query:
        return PLAIN_READ  # the hot path: a plain read of the current version
    values = single_values(query, SECRET_PARAMS)
    stage = values.get("stage")
    version = values.get("version")
    if stage is not None and _STAGE.fullmatch(stage) is None:
        raise InvalidRequest("'stage' must be a stage label such as 'current' or 'previous'")
    if version is not None and _VERSION.fullmatch(version) is None:
        raise InvalidRequest("'version' is not a valid version id")
    if stage is not None and version is not None:
        raise InvalidRequest("give 'stage' or 'version', not both")
    field = values.get("field")
    if field is not None and not field:
        raise InvalidRequest("'field' may not be empty")
    fmt = values.get("format", "json")
    if fmt not in ("json", "raw"):
        raise InvalidRequest("'format' must be 'json' or 'raw'")
    refresh = parse_bool("refresh", values["refresh"]) if "refresh" in values else False
    wait = parse_wait(values["wait"]) if "wait" in values else None
    index = values.get("index")
    if (wait is None) != (index is None):
        raise InvalidRequest("a long-poll needs both 'wait' and 'index'")
    if index is not None and _VERSION.fullmatch(index) is None:
        raise InvalidRequest("'index' is not a valid version id")
    if wait is not None and (stage is not None or version is not None or refresh):
        raise InvalidRequest("a long-poll follows the current version: no stage/version/refresh")
    return SecretQuery(stage, version, field, fmt == "raw", refresh, wait, index)


def parse_list_query(query: MultiMapping[str]) -> str:
    """The `prefix` of `GET /v1/secrets` ("" when absent)."""
    values = single_values(query, LIST_PARAMS)
    prefix = values.get("prefix", "")
    if len(prefix) > MAX_NAME_LENGTH or _PREFIX.fullmatch(prefix) is None:
        raise InvalidRequest("'prefix' may only contain A-Z a-z 0-9 / _ + = . @ -")
    return prefix

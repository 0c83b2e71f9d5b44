"""Strict reading of Vault/OpenBao answers: capped bodies, strict JSON.

A Vault answer is hostile until proven otherwise. A body larger than the cap
is cut off and refused, never buffered whole. JSON must be a single object
with no duplicate keys (two parsers disagreeing on which one wins is how
smuggling works), no NaN/Infinity, no number that cannot round-trip (integers
outside 64 bits, floats that overflow), and no nesting deeper than
`MAX_DEPTH`. Every refusal is a `BadBackendAnswer` naming the backend and the
request path, never the body: the body may hold a secret.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import orjson

from secretd.errors import BadBackendAnswer

MAX_DEPTH = 32
# Longest number literal we accept: a 64-bit integer has at most 20 digits plus a sign;
# a float needs no more than ~25 significant characters to round-trip.
MAX_NUMBER_CHARS = 40
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class _Refused(ValueError):
    """Raised inside the JSON hooks; turned into BadBackendAnswer by `parse_object`."""


def body_cap(max_secret_bytes: int) -> int:
    """The most bytes we read from one answer: room for a JSON-escaped value
    (escaping can blow a byte up to 6 characters, but a KV map of text rarely
    passes 4x) plus Vault's envelope."""
    return max_secret_bytes * 4 + 64 * 1024


def parse_object(raw: bytes, *, where: str) -> dict[str, Any]:
    """Parse `raw` as one strict JSON object. `where` names the backend and path."""
    try:
        # orjson first: fast, rejects NaN/Infinity, invalid UTF-8, lone surrogates,
        # and nesting deeper than 1024 without recursing in Python.
        loose = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadBackendAnswer(f"{where}: answer is not valid JSON") from None
    if not isinstance(loose, dict):
        raise BadBackendAnswer(f"{where}: answer is not a JSON object")
    if _depth(loose) > MAX_DEPTH:
        raise BadBackendAnswer(f"{where}: answer is nested deeper than {MAX_DEPTH} levels")
    try:
        # The stdlib parser with hooks is the one whose result we keep: it sees every
        # duplicate key and every number literal exactly as written.
        strict: dict[str, Any] = json.loads(
            raw,
            object_pairs_hook=_unique_keys,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            parse_constant=_no_constant,
        )
    except _Refused as exc:
        raise BadBackendAnswer(f"{where}: answer refused: {exc}") from None
    except (ValueError, RecursionError):
        raise BadBackendAnswer(f"{where}: answer is not valid JSON") from None
    return strict


def _depth(value: Any) -> int:
    """Maximum nesting of containers, computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Refused("duplicate key in a JSON object")
        result[key] = value
    return result


def _bounded_int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Refused("number literal too long")
    number = int(literal)
    if not _INT_MIN <= number <= _INT_MAX:
        raise _Refused("integer outside the 64-bit range")
    return number


def _finite_float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Refused("number literal too long")
    number = float(literal)
    if not math.isfinite(number):
        raise _Refused("number overflows a double")
    return number


def _no_constant(literal: str) -> Any:
    raise _Refused(f"{literal} is not JSON")

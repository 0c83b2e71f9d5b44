"""Answers built once per cached view (api.secrets.plain_body, api.fastread)."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime

import orjson

from secretd.api.fastread import prebuilt_answer
from secretd.api.secrets import plain_body
from secretd.model import CURRENT, CachedSecret, SecretName, SecretValue, Version

VALUE = b"ab" * 512  # 1 KiB of text


def view(value: bytes = VALUE, *, stale: bool = False) -> CachedSecret:
    version = Version(
        "7", frozenset({CURRENT}), datetime(2026, 1, 2, tzinfo=UTC), SecretValue(value)
    )
    return CachedSecret(SecretName("app/db"), version, stale=stale, backend="memory")


def test_a_plain_body_is_the_document_built_once_per_view() -> None:
    secret = view()
    body = plain_body(secret)
    assert orjson.loads(body) == {
        "name": "app/db",
        "version_id": "7",
        "stages": ["current"],
        "created_at": "2026-01-02T00:00:00.000Z",
        "value": VALUE.decode(),
        "stale": False,
    }
    assert plain_body(secret) is body
    assert orjson.loads(plain_body(view(stale=True)))["stale"] is True  # another view


def test_a_kept_body_holds_about_its_own_size() -> None:
    secret = view()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        body = plain_body(secret)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # orjson's output keeps the room it reserved while writing (16 KiB here):
    # kept for each cached secret, that was 11 KiB a secret too many.
    assert kept < len(body) + 1024


def test_the_fast_answer_is_head_date_server_and_the_same_body() -> None:
    secret = view()
    date = b"Date: Fri, 02 Jan 2026 00:00:00 GMT\r\n"
    answer = prebuilt_answer(secret, date)._answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert body == plain_body(secret)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert lines[1:5] == [
        b"Cache-Control: no-store",
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        date.rstrip(),
    ]
    assert lines[5].startswith(b"Server: ")

"""Raw HTTP requests a hostile or broken client might send (shared by integration and e2e).

Each must get a clear 4xx or a closed connection, never a value, never a
traceback, and the server must keep serving everyone else.
"""

from __future__ import annotations


def close_get(target: bytes, headers: bytes = b"Host: x\r\n") -> bytes:
    """A GET asking the server to close afterwards (so a reader sees EOF)."""
    return b"GET " + target + b" HTTP/1.1\r\n" + headers + b"Connection: close\r\n\r\n"


HEALTH_CLOSE = close_get(b"/v1/health")

HOSTILE: dict[str, bytes] = {
    "traversal": close_get(b"/v1/secrets/../../etc/passwd"),
    "encoded traversal": close_get(b"/v1/secrets/app/%2e%2e/%2e%2e/etc"),
    "encoded slash": close_get(b"/v1/secrets/app%2f..%2fetc"),
    "nul": close_get(b"/v1/secrets/app/k%00x"),
    "raw nul": close_get(b"/v1/secrets/app/k\x00x"),
    "duplicate params": close_get(b"/v1/secrets/app/k?stage=current&stage=previous"),
    "long url": close_get(b"/v1/secrets/" + b"a" * 9000),
    "long header": close_get(b"/v1/health", b"X-Big: " + b"b" * 9000 + b"\r\n"),
    "many headers": close_get(b"/v1/health", b"X-A: 1\r\n" * 200),
    "cl+te": (
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n"
    ),
    "double cl": (
        b"GET /v1/health HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello"
    ),
    "te obfuscated": (
        b"GET /v1/health HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    ),
    "body on get": b"GET /v1/health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    "wrong method": b"DELETE /v1/secrets/app/k HTTP/1.1\r\nConnection: close\r\n\r\n",
    "bogus method": b"BREW /v1/secrets/app/k HTTP/1.1\r\nConnection: close\r\n\r\n",
    "bare lf": b"GET /v1/health HTTP/1.1\nHost: x\n\n",
    "tls client hello": bytes.fromhex(
        "16030100c4010000c00303" + "ab" * 32 + "000002130101000095" + "00" * 149
    ),
    "garbage": bytes(range(256)) * 8,
}


def status_of(answer: bytes) -> int | None:
    """The status code of the first response, or None when the server just closed."""
    if not answer:
        return None
    return int(answer.split(b" ", 2)[1])


def malformed_with(planted: bytes) -> dict[str, bytes]:
    """Requests aiohttp refuses on its own (mostly its parser), each carrying
    `planted` (a token, a value) in the bytes at fault: the answer must be our
    JSON error and never echo it."""
    p = planted
    get = b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n"
    return {
        "space before colon": get + b"X-Secretd-Token : " + p + b"\r\n\r\n",
        "header without colon": get + b"X-Secretd-Token " + p + b"\r\n\r\n",
        "obs-fold": get + b"X-A: 1\r\n " + p + b"\r\n\r\n",
        "control char in value": get + b"X-Secretd-Token: " + p + b"\x01\r\n\r\n",
        "bare cr in value": get + b"X-Secretd-Token: " + p + b"\rX\r\n\r\n",
        "non-ascii name": get + b"X-\xff" + p + b": 1\r\n\r\n",
        "bad request line": b"GET /v1/" + p + b" HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        "bad version": b"GET /v1/health HTTP/9." + p + b"\r\nHost: x\r\n\r\n",
        "no version": b"GET /v1/" + p + b"\r\nHost: x\r\n\r\n",
        "invalid method": b"G(" + p + b") /v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
        "nul in target": b"GET /v1/secrets/" + p + b"\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
        "bad absolute url": b"GET http://[" + p + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "oversize line": b"GET /v1/secrets/" + p + b"a" * 5000 + b" HTTP/1.1\r\n\r\n",
        "oversize header": get + b"X-Big: " + p + b"b" * 5000 + b"\r\n\r\n",
        "too many headers": get + b"X-A: " + p + b"\r\n" * 1 + b"X-B: 1\r\n" * 40 + b"\r\n",
        "bad content-length": get + b"Content-Length: " + p + b"\r\n\r\n",
        "bad chunk size": get + b"Transfer-Encoding: chunked\r\n\r\nzz" + p + b"\r\n\r\n",
        "bad chunk end": get + b"Transfer-Encoding: chunked\r\n\r\n3\r\n" + p + b"\r\n0\r\n\r\n",
        "bad transfer-encoding": get + b"Transfer-Encoding: " + p + b"\r\n\r\n",
        # Not a parser error: aiohttp answers an unknown Expect (417) before any middleware.
        "unknown expect": get + b"Expect: " + p + b"\r\n\r\n",
        "unknown expect, no route": b"GET /nowhere HTTP/1.1\r\nExpect: " + p + b"\r\n\r\n",
    }

"""Hypothesis strategies for hostile HTTP requests to the agent: request lines,
headers, secret names and query strings, built mostly from pieces the agent
knows (routes, parameters, header names) so examples reach deep, mixed with
bytes it must refuse."""

from __future__ import annotations

import string
from typing import TypeVar
from urllib.parse import quote

from hypothesis import strategies as st

from tests.fuzz.target import HEADER_CANARY

CRLF = b"\r\n"
T = TypeVar("T")
METHODS = [
    "GET",
    "GET",
    "GET",
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "OPTIONS",
    "TRACE",
    "CONNECT",
]
ROUTES = [
    "/v1/secrets/",
    "/v1/secrets",
    "/v1/health",
    "/metrics",
    "/secretsmanager/get",
    "/ping",
    "/",
    "*",
    "//v1/secrets/",
    "http://localhost/v1/secrets/",
]
NAME_CHARS = string.ascii_letters + string.digits + "/_+=.@-"
NAME_PIECES = [
    "app/k",
    "app/",
    "fuzz/canary",
    "fuzz/",
    "..",
    ".",
    "//",
    "%2e%2e",
    "%2f",
    "%00",
    "%",
    "%zz",
    "*",
    "**",
    " ",
    "\t",
    "é",
    "\u2028",
    "#",
    ";",
]
PARAMS = [
    "stage",
    "version",
    "field",
    "format",
    "refresh",
    "wait",
    "index",
    "prefix",
    "secretId",
    "versionId",
    "versionStage",
    "refreshNow",
]
PARAM_VALUES = [
    "current",
    "previous",
    "AWSCURRENT",
    "raw",
    "json",
    "true",
    "false",
    "1",
    "0ms",
    "250ms",
    "1s",
    "-1s",
    "99999h",
    "1e9",
    "app/k",
    "fuzz/canary",
    "",
]
HEADER_NAMES = [
    "Host",
    "X-Secretd-Token",
    "X-Aws-Parameters-Secrets-Token",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Origin",
    "X-Forwarded-For",
    "Forwarded",
    "Sec-Fetch-Site",
    "Expect",
    "Upgrade",
    "Accept",
]
VERSIONS = [b"HTTP/1.1"] * 6 + [
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"HTTP/1.1 x",
    b"",
    b"HTTP/0.9",
    b"http/1.1",
]


def _text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8"), max_size=max_size)


def _encode(text: str) -> bytes:
    return text.encode("utf-8")


class Picker:
    """Draws the usual choice, or, in a mutated request, sometimes an odd one.

    Half the requests are clean (every part well formed, so they reach routing,
    the TCP guard, parameter checks and the cache); the other half have each part
    replaced by something odd one time in four."""

    def __init__(self, draw: st.DrawFn, clean: bool) -> None:
        self.draw = draw
        self.clean = clean

    def __call__(self, usual: st.SearchStrategy[T], odd: st.SearchStrategy[T]) -> T:
        if self.clean:
            return self.draw(usual)
        return self.draw(st.one_of(usual, usual, usual, odd))


def _name(pick: Picker) -> str:
    usual = st.one_of(
        st.text(NAME_CHARS, min_size=1, max_size=40),
        st.lists(st.sampled_from(NAME_PIECES) | st.text(NAME_CHARS, max_size=8), max_size=6).map(
            "".join
        ),
    )
    return pick(usual, st.one_of(_text(40), st.text(NAME_CHARS, min_size=500, max_size=600)))


def _query(pick: Picker) -> str:
    pairs = [
        (
            pick(st.sampled_from(PARAMS), _text(12)),
            pick(st.sampled_from(PARAM_VALUES), st.just(_name(pick))),
        )
        for _ in range(pick.draw(st.integers(0, 4)))
    ]
    if not pairs:
        return ""
    encode = pick.draw(st.booleans())
    return "?" + "&".join(
        f"{quote(k, safe='') if encode else k}={quote(v, safe='') if encode else v}"
        for k, v in pairs
    )


def _sane_header(pick: Picker, token: bytes) -> bytes:
    """A well-formed header line, so clean requests get past the parser."""
    canary = HEADER_CANARY.encode()
    return pick.draw(
        st.sampled_from(
            [
                b"X-Secretd-Token: " + token,
                b"X-Aws-Parameters-Secrets-Token: " + token,
                b"X-Secretd-Token: " + canary,
                b"X-Note: " + canary,
                b"Accept: */*",
                b"Connection: close",
                b"Connection: keep-alive",
                b"Sec-Fetch-Site: cross-site",
                b"Sec-Fetch-Site: same-origin",
                b"Origin: http://" + canary,
                b"X-Forwarded-For: 10.0.0.1",
                b"Expect: 100-continue",
                b"Content-Length: 0",
            ]
        )
    )


def _header(pick: Picker, token: bytes) -> bytes:
    if pick.clean:
        return _sane_header(pick, token)
    name = pick(st.sampled_from(HEADER_NAMES).map(_encode), st.binary(min_size=1, max_size=16))
    separator = pick(st.just(b": "), st.sampled_from([b":", b" : ", b":\t", b"", b":\r "]))
    usual = st.one_of(
        st.just(token),
        st.sampled_from([b"localhost", b"127.0.0.1", b"close", b"keep-alive", b"chunked"]),
        st.sampled_from([b"0", b"5", b"-1", b"99999999999999999999", b"cross-site", b"*/*"]),
        st.text(string.ascii_letters + string.digits, max_size=20).map(
            lambda t: _encode(HEADER_CANARY + t)
        ),
    )
    odd = st.one_of(
        st.just(token + b" x"),
        st.binary(max_size=40).map(lambda b: HEADER_CANARY.encode() + b),
        _text(40).map(lambda t: _encode(HEADER_CANARY + t)),
    )
    return name + separator + pick(usual, odd)


@st.composite
def requests(draw: st.DrawFn, token: bytes) -> bytes:
    """One request: request line, headers (a Host mostly), maybe a body."""
    pick = Picker(draw, clean=draw(st.booleans()))
    method = _encode(
        pick(
            st.sampled_from(METHODS), st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
        )
    )
    route = draw(st.sampled_from(ROUTES))
    target = _encode(route + (_name(pick) if route.endswith("/") else "") + _query(pick))
    version = pick(st.just(b"HTTP/1.1"), st.sampled_from(VERSIONS))
    eol = pick(st.just(CRLF), st.just(b"\n"))
    lines = [method + b" " + target + (b" " + version if version else b"")]
    if pick(st.just(True), st.just(False)):
        lines.append(b"Host: localhost")
    lines += [_header(pick, token) for _ in range(draw(st.integers(0, 5)))]
    body = pick(st.just(b""), st.binary(min_size=1, max_size=32))
    return eol.join(lines) + eol + eol + body


def wire(token: bytes) -> st.SearchStrategy[bytes]:
    """What one connection sends: one or a few pipelined requests, or raw bytes."""
    pipelined = st.lists(requests(token), min_size=1, max_size=3).map(b"".join)
    return st.one_of(pipelined, pipelined, pipelined, st.binary(min_size=1, max_size=300))

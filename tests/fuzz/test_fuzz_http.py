"""Property-based fuzzing of the request path against a running agent.

Request lines, methods, headers (names, separators, values), secret names and
query strings, pipelined or as raw bytes, over the Unix socket and the token-
guarded loopback TCP listener. Only invariants are asserted (tests/fuzz/target.py):
no 5xx but 503/504, our JSON error shape, no traceback, no canary anywhere, the
agent still serving a legitimate read, memory bounded.

Bounded and deterministic in `make test`; `make fuzz` runs it long and random.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.profiles import fuzz_settings
from tests.fuzz.strategies import wire
from tests.fuzz.target import Target, start_target


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    yield from start_target()


@pytest.mark.parametrize("where", ["unix", "tcp"])
def test_hostile_requests_keep_every_invariant(target: Target, where: str) -> None:
    @fuzz_settings(examples=300)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        sent = data.draw(wire(target.token), label="sent")
        target.check(target.send(where, sent))

    run()

"""Pure parts of the API: strict query parsing and the per-caller token bucket."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict

from secretd.api.params import MAX_WAIT_SECONDS, parse_list_query, parse_secret_query
from secretd.api.ratelimit import RateLimiter
from secretd.errors import InvalidRequest, RateLimited
from secretd.model import Caller
from tests.fakes.fake_clock import FakeClock


def q(*pairs: tuple[str, str]) -> MultiDict[str]:
    return MultiDict(pairs)


def test_defaults_and_every_parameter() -> None:
    assert parse_secret_query(q()).raw is False
    parsed = parse_secret_query(
        q(("field", "password"), ("format", "raw"), ("refresh", "true"), ("stage", "previous"))
    )
    assert (parsed.field, parsed.raw, parsed.refresh, parsed.stage) == (
        "password",
        True,
        True,
        "previous",
    )
    poll = parse_secret_query(q(("wait", "30s"), ("index", "v1")))
    assert (poll.wait, poll.index) == (30.0, "v1")


def test_wait_is_capped() -> None:
    assert parse_secret_query(q(("wait", "2h"), ("index", "v"))).wait == MAX_WAIT_SECONDS


@pytest.mark.parametrize(
    "pairs",
    [
        [("nope", "1")],
        [("stage", "a"), ("stage", "a")],
        [("refresh", "True")],
        [("format", "")],
        [("wait", "30")],
        [("index", "v")],
        [("stage", "a b")],
        [("version", "v\n1")],
        [("field", "x" * 600)],
    ],
)
def test_bad_queries(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(InvalidRequest):
        parse_secret_query(q(*pairs))


@given(st.text(max_size=80))
def test_messages_never_echo_values(value: str) -> None:
    """Whatever a caller puts in a parameter, the error names the key, not the value."""
    for key in ("stage", "version", "refresh", "format", "wait"):
        try:
            parse_secret_query(q((key, "Zq" + value + "Zq"), ("index", "v")))
        except InvalidRequest as exc:
            assert "Zq" not in exc.message


def test_list_prefix() -> None:
    assert parse_list_query(q()) == ""
    assert parse_list_query(q(("prefix", "app/"))) == "app/"
    for bad in ("a b", "a\x00", "x" * 600):
        with pytest.raises(InvalidRequest):
            parse_list_query(q(("prefix", bad)))


def test_bucket_spends_refills_and_is_per_caller() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    alice, bob = Caller(uid=1), Caller(uid=2)
    assert [limiter.try_take(alice) for _ in range(4)] == [True, True, True, False]
    assert limiter.try_take(bob)  # a separate bucket
    with pytest.raises(RateLimited):
        limiter.take(alice)
    clock.advance(0.5)  # one token back at 2/s
    assert limiter.try_take(alice)
    assert not limiter.try_take(alice)
    clock.advance(100)
    assert [limiter.try_take(alice) for _ in range(4)] == [True, True, True, False]  # capped


def test_tcp_callers_share_a_bucket_and_the_table_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock, max_buckets=8)
    assert limiter.try_take(Caller(tcp=True))
    assert not limiter.try_take(Caller(tcp=True))
    for uid in range(100):
        limiter.try_take(Caller(uid=uid))
        assert len(limiter) <= 8
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1, clock=clock)

"""The request-head deadline, driven by a hand-cranked scheduler (no sleeps)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from secretd.api.deadline import HeadDeadline


@dataclass
class Timer:
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Scheduler:
    timers: list[Timer] = field(default_factory=list)

    def __call__(self, delay: float, callback: Callable[[], None]) -> Timer:
        assert delay == 2.0
        timer = Timer(callback)
        self.timers.append(timer)
        return timer

    def fire(self) -> None:
        """Time passes: every live timer goes off."""
        for timer in [t for t in self.timers if not t.cancelled]:
            timer.cancelled = True
            timer.callback()

    @property
    def live(self) -> int:
        return sum(not t.cancelled for t in self.timers)


def make() -> tuple[HeadDeadline, Scheduler, list[str]]:
    fired: list[str] = []
    sched = Scheduler()
    deadline = HeadDeadline(2.0, lambda: fired.append("closed"), schedule=sched)
    deadline.start()
    return deadline, sched, fired


def test_a_silent_connection_expires() -> None:
    _, sched, fired = make()
    sched.fire()
    assert fired == ["closed"]


def test_trickled_bytes_do_not_extend_it() -> None:
    deadline, sched, fired = make()
    for byte in b"GET /v1/health HTTP/1.1\r\nHost: x\r\n":
        deadline.feed(bytes([byte]))
    assert sched.live == 1  # still the first timer
    sched.fire()
    assert fired == ["closed"]


def test_a_complete_head_disarms_even_split_across_reads() -> None:
    deadline, sched, fired = make()
    deadline.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r")
    deadline.feed(b"\n")
    assert sched.live == 0
    sched.fire()
    assert fired == []


def test_bare_lf_heads_count() -> None:
    deadline, sched, _ = make()
    deadline.feed(b"GET / HTTP/1.1\nHost: x\n\n")
    assert sched.live == 0


def test_the_next_head_gets_its_own_deadline_from_its_first_byte() -> None:
    deadline, sched, fired = make()
    deadline.feed(b"GET / HTTP/1.1\r\n\r\n")
    assert sched.live == 0  # between requests: aiohttp's keep-alive timer's business
    deadline.feed(b"GET /v1/he")
    assert sched.live == 1
    sched.fire()
    assert fired == ["closed"]


def test_pipelined_bytes_after_a_head_start_the_next() -> None:
    deadline, sched, fired = make()
    deadline.feed(b"GET /a HTTP/1.1\r\n\r\nGET /b HTT")
    assert sched.live == 1
    deadline.feed(b"P/1.1\r\n\r\n")
    assert sched.live == 0
    sched.fire()
    assert fired == []


def test_stop_cancels() -> None:
    deadline, sched, fired = make()
    deadline.stop()
    sched.fire()
    assert fired == []


def test_complete_pipelined_heads_in_one_read_start_no_clock() -> None:
    """Two complete heads in one write (a request and a long-poll behind it): no
    head is pending, so nothing may expire while the long-poll waits."""
    deadline, sched, fired = make()
    deadline.feed(b"GET /a HTTP/1.1\r\n\r\nGET /b?wait=30s&index=1 HTTP/1.1\r\n\r\n")
    assert sched.live == 0
    sched.fire()
    assert fired == []


def test_many_complete_heads_then_a_partial_one_start_its_clock() -> None:
    deadline, sched, fired = make()
    deadline.feed(b"GET /a HTTP/1.1\n\nGET /b HTTP/1.1\r\n\r\n" * 3 + b"GET /c")
    assert sched.live == 1
    sched.fire()
    assert fired == ["closed"]


def test_whole_requests_in_one_read_start_no_clock() -> None:
    deadline, sched, fired = make()
    deadline.feed(b"GET /v1/secrets/a HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(100):  # a keep-alive client: one whole request (or two) per read
        deadline.feed(b"GET /v1/secrets/a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    assert len(sched.timers) == 1 and sched.live == 0  # only the connection's first
    deadline.feed(b"GET /v1/secrets/a HTTP/1.1\r\n")  # a head left incomplete
    assert sched.live == 1
    sched.fire()
    assert fired == ["closed"]

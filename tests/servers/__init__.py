"""Real components the tests start and stop: `bao server -dev`, `moto_server`,
PostgreSQL, the `secretd agent` itself, a second local user. Fakes (real
implementations of our own protocols) live in tests/fakes/."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar


class Spawned(Protocol):
    """A server process just spawned: `wait_ready` raises RuntimeError when it does not come up."""

    def wait_ready(self) -> None: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=Spawned)


def first_ready(spawn: Callable[[], S], what: str, attempts: int = 3) -> S:
    """The first of up to `attempts` servers from `spawn()` that comes up (a free
    port may be taken between probe and bind); every other one is stopped, and so
    is one whose wait is interrupted: no server is left behind."""
    last_error = ""
    for _ in range(attempts):
        server = spawn()
        try:
            server.wait_ready()
            return server
        except RuntimeError as exc:
            last_error = str(exc)
            server.stop()
        except BaseException:
            server.stop()
            raise
    raise RuntimeError(f"{what} did not start: {last_error}")

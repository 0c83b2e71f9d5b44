"""What rotation remembers between runs, in `agent.state_dir`/rotation/:

    <sha256(name)>.json   {"secret", "token", "step", "last_rotated_at",
                           "last_attempt_at", "last_result", "last_error", "failures"}
    <sha256(name)>.lock   flock()ed for the whole of one rotation

`token`/`step` say how far the rotation of the pending version staged under
`token` got, so a run after a crash resumes at the next step. They are only a
shortcut: a pending version with another token (staged by another host) is
resumed from `set`, which is safe because every step is idempotent.
`last_rotated_at` survives restarts, so the schedule does not rotate
everything again when the agent starts.

The lock is per secret and per host: the agent's scheduler, `secretd rotate`
through the agent and `secretd rotate` run directly against the store all
take it, so only one rotation of a secret runs at a time. Files are 0600 in
a 0700 directory; they hold no value. Made by root (`secretd rotate -c` run
by an operator), they take the owner of the state dir, so an agent running as
its own user can still lock and write them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from secretd.errors import StoreError
from secretd.model import SecretName, rfc3339
from secretd.rotation.errors import RotationBusy
from secretd.rotation.model import Step

_MAX_STATE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class RotationState:
    """One secret's rotation record (no value)."""

    token: str | None = None
    step: Step | None = None  # the last step carried out for `token`
    last_rotated_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_result: str | None = None  # "rotated" | "failed"
    last_error: str | None = None
    failures: int = 0  # failed runs since the last success

    def progressed(self, token: str, step: Step) -> RotationState:
        return dataclasses.replace(self, token=token, step=step)

    def succeeded(self, when: datetime) -> RotationState:
        return RotationState(None, None, when, when, "rotated", None, 0)

    def failed(self, when: datetime, error: str, *, redo_from_set: bool) -> RotationState:
        step = Step.CREATE if redo_from_set and self.step is not None else self.step
        return dataclasses.replace(
            self,
            step=step,
            last_attempt_at=when,
            last_result="failed",
            last_error=error,
            failures=self.failures + 1,
        )


class StateDir:
    """Rotation state files and locks under `<state_dir>/rotation`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.root = state_dir / "rotation"

    def _path(self, name: SecretName, suffix: str) -> Path:
        return self.root / (hashlib.sha256(name.encode()).hexdigest() + suffix)

    def _ensure(self) -> None:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._own(lambda uid, gid: os.chown(self.root, uid, gid))
        except OSError as exc:
            raise StoreError(
                f"rotation state {self.root}: cannot create ({exc.strerror})"
            ) from None

    def _own(self, chown: Callable[[int, int], None]) -> None:
        """As root, give what we made to the state dir's owner (the agent's user)."""
        if os.geteuid() != 0:
            return
        with contextlib.suppress(OSError):
            owner = self.state_dir.stat()
            chown(owner.st_uid, owner.st_gid)

    @contextlib.contextmanager
    def hold(self, name: SecretName) -> Iterator[None]:
        """Hold `name`'s rotation lock, or raise RotationBusy at once."""
        self._ensure()
        path = self._path(name, ".lock")
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise StoreError(f"rotation lock {path}: cannot open ({exc.strerror})") from None
        try:
            self._own(lambda uid, gid: os.fchown(fd, uid, gid))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise RotationBusy(
                        f"secret {name!r} is being rotated by another process; try again later"
                    ) from None
                raise StoreError(f"rotation lock {path}: {exc.strerror}") from None
            yield
        finally:
            os.close(fd)

    def load(self, name: SecretName) -> RotationState:
        """The recorded state (a fresh one when none, or when it is unreadable)."""
        # Imported here: the store module loads cryptography, which a config
        # without a file backend never needs.
        from secretd.store.layout import read_bounded

        path = self._path(name, ".json")
        try:
            data = read_bounded(path, _MAX_STATE_BYTES, what="rotation state")
            doc = orjson.loads(data) if data else None
        except (OSError, StoreError, orjson.JSONDecodeError):
            return RotationState()
        if not isinstance(doc, dict) or doc.get("secret") != name:
            return RotationState()
        return _state_from(doc)

    def save(self, name: SecretName, state: RotationState) -> None:
        """Replace the state file atomically (temp file, fsync, rename)."""
        self._ensure()
        path = self._path(name, ".json")
        doc = {"secret": str(name), **_state_doc(state)}
        tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o600)
            try:
                self._own(lambda uid, gid: os.fchown(fd, uid, gid))
                os.write(fd, orjson.dumps(doc) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"rotation state {path}: cannot write ({exc.strerror})") from None


def _state_doc(state: RotationState) -> dict[str, Any]:
    def when(moment: datetime | None) -> str | None:
        return rfc3339(moment) if moment is not None else None

    return {
        "token": state.token,
        "step": state.step.value if state.step is not None else None,
        "last_rotated_at": when(state.last_rotated_at),
        "last_attempt_at": when(state.last_attempt_at),
        "last_result": state.last_result,
        "last_error": state.last_error,
        "failures": state.failures,
    }


def _state_from(doc: dict[str, Any]) -> RotationState:
    def text(key: str) -> str | None:
        value = doc.get(key)
        return value if isinstance(value, str) else None

    def when(key: str) -> datetime | None:
        value = text(key)
        try:
            return datetime.fromisoformat(value) if value else None
        except ValueError:
            return None

    step = text("step")
    failures = doc.get("failures")
    return RotationState(
        token=text("token"),
        step=Step(step) if step in {s.value for s in Step} else None,
        last_rotated_at=when("last_rotated_at"),
        last_attempt_at=when("last_attempt_at"),
        last_result=text("last_result"),
        last_error=text("last_error"),
        failures=failures if type(failures) is int and failures >= 0 else 0,
    )

"""systemd `LoadCredential=ID:/run/secretd/secretd.sock`: answering the service manager.

When a unit starts, PID 1 connects to our socket from a client socket bound to
the abstract address ``\\0<random hex>/unit/<unit name>/<credential id>``,
shuts down its writing side at once, reads until EOF, and stores what it read
as the credential: that early EOF must not end the connection unanswered.
Anyone can bind such an address, so the address is believed only when the
peer's kernel-verified uid is 0. Otherwise - or when no `[[credential]]`
matches, or the secret cannot be read - the connection is closed with nothing
written. systemd then starts the unit with an empty credential file (systemd
#27373), so units guard with `ExecStartPre=/usr/bin/test -s %d/ID`
(docs/operating.md). Every request is audited (never the value).
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import structlog

from secretd.audit import AuditSink
from secretd.clock import Clock, SystemClock
from secretd.config.schema import CredentialConfig
from secretd.denials import DenyLimiter
from secretd.errors import SecretdError
from secretd.model import Caller, SecretReader
from secretd.usage import UsageSink

log = structlog.get_logger(__name__)

# "<random>/unit/<unit>/<id>"; unit names and ids never contain '/'.
_PEER = re.compile(r"[^/]*/unit/(?P<unit>[^/]+)/(?P<id>[^/]+)")


@dataclass(frozen=True, slots=True)
class CredentialRequest:
    """What the client socket's address claims: a unit asking for one credential id."""

    unit: str
    id: str


def parse_peer_address(peer: object) -> CredentialRequest | None:
    """The request encoded in an abstract peer address, or None when it is not one."""
    if isinstance(peer, bytes):
        try:
            peer = peer.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(peer, str) or not peer.startswith("\0"):
        return None
    match = _PEER.fullmatch(peer[1:])
    if match is None:
        return None
    return CredentialRequest(unit=match["unit"], id=match["id"])


class CredentialService:
    """Matches requests to `[[credential]]` entries and reads their values."""

    def __init__(
        self,
        credentials: Sequence[CredentialConfig],
        reader: SecretReader,
        audit: AuditSink,
        usage: UsageSink | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._credentials = tuple(credentials)
        self._reader = reader
        self._audit = audit
        self._usage = usage
        # The audit log bounds these denials per caller; the log (stderr, the
        # journal) gets the same bound, and the count held back in the next line.
        self._log_gate = DenyLimiter(clock or SystemClock())

    def match(self, request: CredentialRequest) -> CredentialConfig | None:
        for entry in self._credentials:
            if entry.id == request.id and fnmatch.fnmatchcase(request.unit, entry.unit):
                return entry
        return None

    async def answer(self, request: CredentialRequest, caller: Caller) -> bytes | None:
        """The bytes to send, or None to close with nothing written."""
        extra = {"unit_requested": request.unit, "credential": request.id}
        if caller.uid != 0:
            self._deny(caller, None, "forbidden_peer", extra)
            return None
        entry = self.match(request)
        if entry is None:
            self._deny(caller, None, "no_match", extra)
            return None
        try:
            cached = await self._reader.read(entry.secret)
            value = cached.version.value
            if entry.field is not None:
                value = value.field(entry.field)
        except SecretdError as exc:
            log.warning("credential.failed", secret=entry.secret, reason=exc.code, **extra)
            self._audit.record(
                "credential",
                secret=entry.secret,
                version_id=None,
                caller=caller,
                result=exc.code,
                **extra,
            )
            return None
        self._audit.record(
            "credential",
            secret=entry.secret,
            version_id=cached.version.version_id,
            caller=caller,
            result="ok",
            **extra,
        )
        if self._usage is not None:
            self._usage.note(entry.secret)
        return value.reveal()

    def _deny(self, caller: Caller, secret: str | None, result: str, extra: dict[str, str]) -> None:
        if self._log_gate.admit("credential", result, caller, secret):
            held = sum(s.count for s in self._log_gate.drain())
            more = {"refusals_not_logged": held} if held else {}
            log.warning("credential.refused", reason=result, uid=caller.uid, **extra, **more)
        self._audit.record(
            "credential", secret=secret, version_id=None, caller=caller, result=result, **extra
        )


class CredentialProtocol(asyncio.Protocol):
    """One credential connection: answer once, then close.

    `identify` turns the connection's socket into a kernel-verified Caller
    (access.identity.peer_caller). The request itself comes only from the peer
    address, never from bytes the client sends.
    """

    def __init__(
        self,
        service: CredentialService,
        identify: Callable[[socket.socket], Caller],
        request: CredentialRequest | None = None,
    ) -> None:
        self._service = service
        self._identify = identify
        self._request = request
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        transport = cast(asyncio.Transport, transport)
        request = self._request or parse_peer_address(transport.get_extra_info("peername"))
        sock = transport.get_extra_info("socket")
        if request is None or sock is None:
            transport.abort()
            return
        self._task = asyncio.get_running_loop().create_task(self._respond(transport, request, sock))

    async def _respond(
        self, transport: asyncio.Transport, request: CredentialRequest, sock: socket.socket
    ) -> None:
        try:
            caller = self._identify(sock)
            payload = await self._service.answer(request, caller)
        except Exception as exc:  # never let one request take the listener down
            log.error("credential.crashed", error=type(exc).__name__)
            payload = None
        if payload is None:
            transport.abort()
            return
        transport.write(payload)
        transport.close()  # flushes, then closes: the reader sees EOF

    def data_received(self, data: bytes) -> None:
        pass  # systemd sends nothing; anything sent is ignored

    def eof_received(self) -> bool:
        # systemd shuts down its writing side before it reads (read_full_file_full
        # in src/basic/fileio.c): that EOF is the request's end, not a hang-up, so
        # keep the transport open to write the answer (False would close it).
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

"""The agent under fuzz: a real `secretd agent` process on a real Unix socket and
loopback TCP, with planted canaries, and the invariants every answer must keep.

Invariants (asserted after every example, whatever was sent):

- every byte that comes back is HTTP; no 5xx but 503 and 504;
- every error with a body is our JSON shape `{"error": {"code", "message"}}`
  (or, on the AWS-compatible route, the AWS agent's forms: docs/aws.md);
- no `Traceback` in an answer or in the agent's log;
- no canary in an answer or the log: the value of a secret no rule lets anyone
  read, the TCP token, and a marker planted in request header values (header
  values are never echoed);
- the agent still serves a legitimate read, and its resident memory stays
  within a generous bound of where it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from tests.e2e.agent_proc import AgentProcess, Store, config_text

# Planted in header values by the strategies; must never come back.
HEADER_CANARY = "hdr-canary-7d1f0c9b"
READABLE = "app/k"
READABLE_VALUE = b"fuzz-readable-value"
# Generous: fuzzing must not grow the agent by more than this (KiB).
RSS_GROWTH_KIB = 64 * 1024
FIRST_BYTE_WITHIN = 1.0  # an incomplete request gets no answer: stop waiting
SETTLE = 0.02  # after a complete answer, how long to wait for another (pipelining)


@dataclass
class Target:
    """A running agent and what it must never reveal."""

    agent: AgentProcess
    tcp_port: int
    token: bytes
    forbidden_value: bytes
    baseline_rss_kib: int
    log_offset: int = 0
    examples: int = 0
    unanswered: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def canaries(self) -> tuple[bytes, ...]:
        return (self.forbidden_value, self.token, HEADER_CANARY.encode())

    def send(self, where: str, data: bytes) -> bytes:
        """`data` over a new connection ("unix" or "tcp"); every byte answered."""
        if where == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(str(self.agent.socket))
        else:
            sock = socket.create_connection(("127.0.0.1", self.tcp_port), timeout=5)
        with sock:
            with contextlib.suppress(OSError):  # the agent may close before reading it all
                sock.sendall(data)
            return _read_answers(sock)

    def check(self, answer: bytes) -> None:
        """The invariants on one answer, the log, memory, and serving."""
        self.examples += 1
        if not answer:
            self.unanswered += 1
        for status, head, body in split_answers(answer):
            self.statuses[status] = self.statuses.get(status, 0) + 1
            assert status < 500 or status in (503, 504), answer[:500]
            if status >= 400 and body:
                assert_error_shape(head, body)
        assert b"Traceback" not in answer
        for canary in self.canaries:
            assert canary not in answer, (canary, answer[:500])
        self._check_log()
        self._check_serving()

    def _check_log(self) -> None:
        with self.agent.log_path.open("rb") as log:
            log.seek(self.log_offset)
            fresh = log.read()
        self.log_offset += len(fresh)
        assert b"Traceback" not in fresh, fresh[-2000:]
        for canary in self.canaries:
            assert canary not in fresh, canary

    def _check_serving(self) -> None:
        assert self.agent.proc is not None and self.agent.proc.poll() is None, self.agent.log()
        get = f"GET /v1/secrets/{READABLE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answers = split_answers(self.send("unix", get.encode()))
        assert answers and answers[0][0] == 200, answers
        assert orjson.loads(answers[0][2])["value"] == READABLE_VALUE.decode()
        growth = vm_rss_kib(self.agent.proc.pid) - self.baseline_rss_kib
        assert growth < RSS_GROWTH_KIB, f"RSS grew by {growth} KiB"

    def summary(self) -> str:
        seen = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return f"{self.examples} examples, {self.unanswered} unanswered; statuses {seen}"


# /secretsmanager/get answers query mistakes as the AWS agent does: 400, plain text;
# and on TCP the guard's refusals too (403 Bad Token, 400 Forwarded, the others' reasons).
AWS_QUERY_ERRORS = (
    b"unknown parameter: ",
    b"duplicate parameter: ",
    b"missing parameter ",
    b"invalid ",
    b"Bad Token",
    b"Forwarded",
    b"requests with Origin are refused",
    b"cross-site requests are refused",
    b"Host is not this listener",
    b"exactly one Host header is required",
)


def assert_error_shape(head: bytes, body: bytes) -> None:
    """Ours `{"error": {"code", "message"}}`, or the AWS-compatible route's forms
    (docs/aws.md): Coral JSON `{"__type", "message"}` or a plain-text query error."""
    if b"content-type: application/json" in head.lower():
        document = orjson.loads(body)
        if "__type" in document:
            assert set(document) <= {"__type", "message"}, body[:500]
        else:
            assert set(document["error"]) == {"code", "message"}, body[:500]
    else:
        assert b"content-type: text/plain" in head.lower(), head
        assert body.startswith(AWS_QUERY_ERRORS), body[:500]


def _read_answers(sock: socket.socket) -> bytes:
    """Read until EOF, or until the answers so far are complete and nothing more
    comes within SETTLE, or nothing at all came within FIRST_BYTE_WITHIN."""
    data = b""
    deadline = time.monotonic() + FIRST_BYTE_WITHIN
    while True:
        complete = bool(data) and answers_complete(data)
        wait = SETTLE if complete else deadline - time.monotonic()
        if wait <= 0:
            return data
        sock.settimeout(wait)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data
        except OSError:
            return data  # reset: what came before is the answer
        if not chunk:
            return data
        data += chunk
        deadline = time.monotonic() + FIRST_BYTE_WITHIN


def split_answers(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(status, head, body) of each HTTP response in `data`; fails on non-HTTP bytes."""
    answers = []
    while data:
        assert data.startswith(b"HTTP/"), data[:200]
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data[:200]
        status = int(head.split(b" ", 2)[1])
        length = _body_length(head, rest)
        answers.append((status, head, rest[:length]))
        data = rest[length:]
    return answers


def answers_complete(data: bytes) -> bool:
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = _body_length(head, rest)
        if len(rest) < length:
            return False
        data = rest[length:]
    return True


def _body_length(head: bytes, rest: bytes) -> int:
    """The body's length; 0 for the answer to a HEAD request, which announces a
    length but sends no body (the agent writes a head and its body at once, so
    a head followed by nothing, or by the next answer, had none)."""
    if not rest or rest.startswith(b"HTTP/1."):
        return 0
    return _content_length(head)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_target() -> Iterator[Target]:
    """A ready agent for one test module (a generator for a pytest fixture)."""
    workdir = Path(tempfile.mkdtemp(prefix="sdf", dir="/tmp"))
    workdir.chmod(0o755)
    agent: AgentProcess | None = None
    try:
        store = Store.create(workdir)
        store.put(READABLE, READABLE_VALUE)
        forbidden = f"forbidden-canary-{secrets.token_hex(8)}".encode()
        store.put("fuzz/canary", forbidden)
        token = f"tok-{secrets.token_hex(16)}".encode()
        (workdir / "token").write_bytes(token)
        (workdir / "token").chmod(0o600)
        port = _free_port()
        allow = (
            f'[tcp]\nlisten = "127.0.0.1:{port}"\ntoken_file = "{workdir / "token"}"\n\n'
            '[[allow]]\nsecrets = ["app/**"]\nuids = [0]\ntcp = true\n\n'
        )
        config = workdir / "secretd.toml"
        config.write_text(config_text(workdir, store, allow=allow, declared=(READABLE,)))
        config.chmod(0o600)
        agent = AgentProcess(workdir, config)
        agent.start()
        asyncio.run(agent.wait_ready())
        assert agent.proc is not None
        target = Target(agent, port, token, forbidden, vm_rss_kib(agent.proc.pid))
        yield target
        print(f"fuzz: {target.summary()}")
    finally:
        if agent is not None:
            agent.kill()
        shutil.rmtree(workdir, ignore_errors=True)

"""A real `secretd agent` process on a real file store, for the canary test.

Starts the installed executable with a config in a short /tmp directory,
waits for `READY=1` on a NOTIFY_SOCKET it binds (never a bare sleep), and
offers plain HTTP over the Unix socket (as root, or as another uid through
setpriv), the CLI, and SIGTERM. Everything it starts is stopped on exit.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from string import Template

from tests.servers.second_user import TestUser, as_user

SECRETD = str(Path(sys.executable).with_name("secretd"))
READY_TIMEOUT = 30.0


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX socket (sends the request bytes as written)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._unix_path)
        self.sock = sock


# The same request, made by a process running as another user; prints JSON.
_REQUEST_AS = """
import http.client, json, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(10)
        s.connect(sys.argv[1]); self.sock = s
c = C("localhost", timeout=10)
c.request(sys.argv[2], sys.argv[3])
r = c.getresponse()
print(json.dumps({"status": r.status, "type": r.getheader("Content-Type") or "",
                  "body": r.read().decode("latin-1")}))
"""


@dataclass
class AgentProcess:
    """One running agent and the files it writes."""

    root: Path
    socket_path: Path
    audit_path: Path
    stderr_path: Path
    config_path: Path
    store: Path
    key: Path
    proc: subprocess.Popen[bytes]
    notify: socket.socket

    def reload(self) -> None:
        """SIGHUP, then wait for the agent's READY=1 that ends the reload."""
        self.proc.send_signal(signal.SIGHUP)
        _wait_ready(self.notify, self.proc, self.stderr_path)

    def request(self, path: str, method: str = "GET") -> Response:
        conn = UnixHTTPConnection(str(self.socket_path))
        try:
            conn.request(method, path)
            answer = conn.getresponse()
            return Response(answer.status, answer.getheader("Content-Type") or "", answer.read())
        finally:
            conn.close()

    def request_as(
        self,
        user: TestUser,
        path: str,
        method: str = "GET",
        *,
        groups: Sequence[int] = (),
        enter: Sequence[str] = (),
    ) -> Response:
        """The request made by a process running as `user` with supplementary
        `groups`; `enter` is an argv prefix such as `unit_cgroup`'s."""
        argv = as_user(
            user,
            [sys.executable, "-c", _REQUEST_AS, str(self.socket_path), method, path],
            groups=groups,
        )
        done = subprocess.run(
            [*enter, *argv],
            capture_output=True,
            timeout=30,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
        )
        if done.returncode != 0:
            raise AssertionError(f"request as {user.name} failed: {done.stderr.decode()}")
        answer = json.loads(done.stdout)
        return Response(answer["status"], answer["type"], answer["body"].encode("latin-1"))

    def cli(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run `secretd ARGS` against this agent's store/socket; output is kept."""
        done = subprocess.run(
            [SECRETD, *args],
            input=stdin,
            capture_output=True,
            timeout=30,
            check=False,
            env={**os.environ, "SECRETD_SOCKET": str(self.socket_path)},
        )
        return done

    def put(self, name: str, value: bytes) -> None:
        done = self.cli("store", "put", str(self.store), name, "--key", str(self.key), stdin=value)
        assert done.returncode == 0, done.stderr.decode()

    def logs(self) -> bytes:
        return self.stderr_path.read_bytes()

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, and the exit status (the agent must stop within `timeout`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def write_config(root: Path, body: str) -> Path:
    path = root / "secretd.toml"
    path.write_text(body)
    path.chmod(0o600)
    return path


def init_store(
    root: Path, values: Sequence[tuple[str, bytes]], prefix: Sequence[str] = ()
) -> tuple[Path, Path]:
    store, key = root / "store", root / "store.key"
    subprocess.run(
        [*prefix, SECRETD, "store", "init", str(store), "--key", str(key)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    for name, value in values:
        subprocess.run(
            [*prefix, SECRETD, "store", "put", str(store), name, "--key", str(key)],
            input=value,
            check=True,
            capture_output=True,
            timeout=30,
        )
    return store, key


def file_store_config(*, agent: str = "", rest: str) -> str:
    """A `running_agent` config template: the socket at $root/s.sock, state in
    $root/state, `agent` (more `[agent]` keys), the store as backend `local`,
    then `rest` (rules, templates)."""
    return (
        f'[agent]\nsocket = "$root/s.sock"\nstate_dir = "$root/state"\n{agent}\n'
        '[backends.local]\ntype = "file"\npath = "$store"\nkey_file = "$key"\n\n'
        f"{rest}"
    )


@contextmanager
def running_agent(
    config_template: str, values: Sequence[tuple[str, bytes]], *, user: TestUser | None = None
) -> Iterator[AgentProcess]:
    """Start an agent on a new store holding `values`. `config_template` is TOML
    with `$root`, `$store` and `$key` placeholders (string.Template); the socket
    must be `$root/s.sock` and the audit log `$root/audit.jsonl`. With `user`,
    the store, config and agent belong to / run as that user instead of root."""
    root = Path(tempfile.mkdtemp(prefix="sdc-", dir="/tmp"))
    root.chmod(0o755)  # a second user must reach the socket
    prefix = as_user(user, []) if user is not None else []
    if user is not None:
        os.chown(root, user.uid, user.gid)
    proc: subprocess.Popen[bytes] | None = None
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        store, key = init_store(root, values, prefix)
        text = Template(config_template).substitute(root=root, store=store, key=key)
        config = write_config(root, text)
        notify_path = root / "notify"
        notify.bind(str(notify_path))
        if user is not None:
            os.chown(config, user.uid, user.gid)
            notify_path.chmod(0o777)
        stderr_path = root / "agent.log"
        with stderr_path.open("wb") as stderr:
            env = {**os.environ, "NOTIFY_SOCKET": str(notify_path)}
            proc = subprocess.Popen(
                [*prefix, SECRETD, "agent", "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=env,
            )
        _wait_ready(notify, proc, stderr_path)
        yield AgentProcess(
            root,
            root / "s.sock",
            root / "audit.jsonl",
            stderr_path,
            config,
            store,
            key,
            proc,
            notify,
        )
    finally:
        notify.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(notify: socket.socket, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    notify.settimeout(0.2)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"agent exited {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            message = notify.recv(4096)
        except TimeoutError:
            continue
        if b"READY=1" in message.split(b"\n"):
            return
    raise AssertionError(f"agent not ready in {READY_TIMEOUT}s: {log.read_text()[-3000:]}")

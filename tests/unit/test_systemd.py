"""sd_notify and LISTEN_FDS against real sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from secretd.systemd import Notifier, listen_fds, watchdog_interval


def _receiver(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    return sock


def test_notify_to_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "n.sock")
    with _receiver(path) as rx:
        notifier = Notifier(path)
        assert notifier.ready("serving 3 secrets\nnow")
        assert rx.recv(4096) == b"READY=1\nSTATUS=serving 3 secrets now"
        assert notifier.reloading()
        msg = rx.recv(4096).decode().split("\n")
        assert msg[0] == "RELOADING=1"
        assert msg[1].startswith("MONOTONIC_USEC=") and int(msg[1].split("=")[1]) > 0
        assert notifier.stopping()
        assert rx.recv(4096).startswith(b"STOPPING=1")
        notifier.close()


def test_notify_to_abstract_socket() -> None:
    name = f"secretd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind("\0" + name)
        rx.settimeout(5)
        notifier = Notifier("@" + name)
        assert notifier.watchdog()
        assert rx.recv(64) == b"WATCHDOG=1"
        notifier.close()


def test_no_notify_socket_is_a_noop() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.ready("x")


def test_notify_to_missing_socket_reports_failure(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "absent.sock"))
    assert not notifier.ready("x")
    notifier.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "nonsense"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected


def test_listen_fds_ignores_other_pid() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1"}
    assert listen_fds(env) == []


def test_socket_activate_passes_a_listening_socket(tmp_path: Path) -> None:
    """Real systemd-socket-activate hands us fd 3 with its name."""
    path = str(tmp_path / "act.sock")
    code = (
        "import os\n"
        "from secretd.systemd import listen_fds\n"
        "socks = listen_fds(os.environ)\n"
        "assert 'LISTEN_FDS' not in os.environ\n"
        "conn, _ = socks[0].sock.accept()\n"
        "conn.sendall(socks[0].name.encode())\n"
        "conn.close()\n"
    )
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", path, "--fdname=api", sys.executable, "-c", code],
        stderr=subprocess.PIPE,
    )
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(10)
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            assert proc.poll() is None, "systemd-socket-activate exited early"
            time.sleep(0.02)
        client.connect(path)
        assert client.recv(16) == b"api"
        client.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()

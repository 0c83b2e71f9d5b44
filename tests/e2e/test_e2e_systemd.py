"""systemd integration of the real agent: READY=1 / WATCHDOG=1 / STOPPING=1 on a
NOTIFY_SOCKET the test binds, and socket activation with LISTEN_FDS."""

from __future__ import annotations

import asyncio
import gc
import socket
import subprocess
import sys
from pathlib import Path

from tests.e2e.agent_proc import BIN, AgentProcess, Store, config_text, write_config
from tests.e2e.conftest import ALLOW_ROOT
from tests.e2e.test_e2e_credentials import CREDENTIAL
from tests.fakes.credential_client import load_credential


def notifications(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def test_ready_watchdog_and_stopping(workdir: Path, store: Store) -> None:
    store.put("app/k", b"v")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(workdir / "notify.sock"))
    notify.setblocking(False)
    config = write_config(workdir / "secretd.toml", config_text(workdir, store, allow=ALLOW_ROOT))
    agent = AgentProcess(
        workdir,
        config,
        env={"NOTIFY_SOCKET": str(workdir / "notify.sock"), "WATCHDOG_USEC": "200000"},
    )
    try:
        agent.start()
        got: list[str] = []
        async with asyncio.timeout(20):  # READY=1 is the readiness signal: no polling of health
            while not any("READY=1" in m for m in got):
                await asyncio.sleep(0.02)
                got += notifications(notify)
        async with agent.session() as http:
            assert (await http.get("/v1/secrets/app/k")).status == 200
        async with asyncio.timeout(10):
            while sum("WATCHDOG=1" in m for m in got) < 2:
                await asyncio.sleep(0.05)
                got += notifications(notify)
        agent.stop()
        got += notifications(notify)
        assert any("STOPPING=1" in m for m in got)
    finally:
        agent.kill()
        notify.close()


def _listening(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)
    return sock


def start_activated(
    config: Path, wrapper: str, sockets: list[socket.socket], socket_name: str
) -> AgentProcess:
    """The agent exec'd by `wrapper` (python -c, argv: the sockets' fds, then the
    agent's argv), which hands `sockets` over as LISTEN_FDS; ours are closed."""
    directory = config.parent
    fds = [sock.fileno() for sock in sockets]
    argv = [sys.executable, "-c", wrapper, *map(str, fds), str(BIN), "agent", "-c", str(config)]
    with (directory / "agent.log").open("wb") as log:
        proc = subprocess.Popen(argv, pass_fds=fds, stdout=log, stderr=log)
    for sock in sockets:
        sock.close()
    return AgentProcess(directory, config, proc=proc, socket_name=socket_name)


WRAPPER = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="secretd.socket")
os.execv(sys.argv[2], sys.argv[2:])
"""


async def test_socket_activation_serves_the_passed_socket(workdir: Path, store: Store) -> None:
    store.put("app/k", b"activated")
    path = workdir / "activated.sock"
    # agent.socket names another path: with LISTEN_FDS it must not be created
    config = write_config(workdir / "secretd.toml", config_text(workdir, store, allow=ALLOW_ROOT))
    agent = start_activated(config, WRAPPER, [_listening(path)], "activated.sock")
    try:
        await agent.wait_ready()
        async with agent.session() as http:
            body = await (await http.get("/v1/secrets/app/k")).json()
        assert body["value"] == "activated"
        assert not (workdir / "s.sock").exists()
        agent.stop()
        assert path.exists()  # an inherited socket is not ours to remove
    finally:
        agent.kill()


# Under load (a fresh clone compiles every module first) the agent may take
# longer than one health probe's timeout to serve the socket it inherited.
SLOW_START = "import time\ntime.sleep(2.5)\n" + WRAPPER


async def test_a_slow_starting_activated_agent_is_waited_for(workdir: Path, store: Store) -> None:
    """Regression: a probe that timed out on the backlog left its writer unclosed
    (a ResourceWarning, an error here) - the flake of the two-socket test below."""
    store.put("app/k", b"slow")
    config = write_config(workdir / "secretd.toml", config_text(workdir, store, allow=ALLOW_ROOT))
    agent = start_activated(config, SLOW_START, [_listening(workdir / "slow.sock")], "slow.sock")
    try:
        await agent.wait_ready()
        async with agent.session() as http:
            assert (await (await http.get("/v1/secrets/app/k")).json())["value"] == "slow"
        agent.stop()
    finally:
        agent.kill()
    gc.collect()  # an unclosed writer of a timed-out probe warns when collected


TWO_SOCKETS = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.dup2(int(sys.argv[2]), 4)
os.environ.update(LISTEN_FDS="2", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="credentials:api")
os.execv(sys.argv[3], sys.argv[3:])
"""


async def test_two_activated_sockets_are_told_apart_by_name(workdir: Path, store: Store) -> None:
    """secretd.socket and secretd-credentials.socket may arrive in any order."""
    store.put("app/db", b'{"password": "by-name-7"}')
    text = config_text(workdir, store, allow=ALLOW_ROOT + CREDENTIAL)
    config = write_config(workdir / "secretd.toml", text)
    sockets = [_listening(workdir / "creds.sock"), _listening(workdir / "api.sock")]
    agent = start_activated(config, TWO_SOCKETS, sockets, "api.sock")
    try:
        await agent.wait_ready()
        async with agent.session() as http:
            body = await (await http.get("/v1/secrets/app/db?field=password")).json()
        assert body["value"] == "by-name-7"
        got = await asyncio.to_thread(
            load_credential, str(workdir / "creds.sock"), "app.service", "db-password"
        )
        assert got == b"by-name-7"
        agent.stop()
    finally:
        agent.kill()

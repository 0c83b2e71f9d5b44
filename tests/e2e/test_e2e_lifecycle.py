"""Start, stop and the socket's life: clean SIGTERM, a live agent's socket is never
stolen, a dead agent's is replaced; `secretd check` exit codes and summary."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from tests.e2e.agent_proc import (
    BIN,
    AgentProcess,
    Store,
    check_config,
    config_text,
    running_agent,
)
from tests.e2e.conftest import ALLOW_ROOT, StartAgent


async def test_sigterm_stops_within_5s_and_removes_the_socket(
    store: Store, start_agent: StartAgent
) -> None:
    vid = store.put("app/k", b"v")
    agent = await start_agent()
    async with agent.session() as http:
        # a parked long-poll must not hold the stop up
        poll = asyncio.create_task(
            http.get("/v1/secrets/app/k", params={"wait": "5m", "index": vid})
        )
        await asyncio.sleep(0.2)
        took = await asyncio.to_thread(agent.stop)
        poll.cancel()
    assert agent.proc is not None and agent.proc.returncode == 0
    assert took < 5.0
    assert not agent.socket.exists()
    assert "agent.stopping" in agent.log()


async def test_a_live_agents_socket_is_never_stolen(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    store.put("app/k", b"v")
    first = await start_agent()
    inode = os.lstat(first.socket).st_ino
    second = subprocess.run(
        [str(BIN), "agent", "-c", str(first.config)], capture_output=True, timeout=30, check=False
    )
    assert second.returncode == 1
    assert b"another agent is serving" in second.stderr
    assert b"Traceback" not in second.stderr
    assert os.lstat(first.socket).st_ino == inode
    async with first.session() as http:
        assert (await http.get("/v1/secrets/app/k")).status == 200


async def test_a_dead_agents_socket_is_replaced(workdir: Path, store: Store) -> None:
    store.put("app/k", b"v")
    config = config_text(workdir, store, allow=ALLOW_ROOT)
    async with running_agent(workdir, config) as crashed:
        crashed.kill()  # SIGKILL: the socket file stays behind
    assert crashed.socket.exists()
    async with running_agent(workdir, config) as again:
        async with again.session() as http:
            assert (await http.get("/v1/secrets/app/k")).status == 200
        again.stop()


def test_check_prints_a_summary(workdir: Path, store: Store) -> None:
    config = workdir / "ok.toml"
    config.write_text(config_text(workdir, store, allow=ALLOW_ROOT, declared=("app/k",)))
    config.chmod(0o600)
    done = check_config(config)
    assert done.returncode == 0, done.stderr
    assert "backend    local: file" in done.stdout
    assert "1 declared: app/k" in done.stdout
    assert "app/**, demo/* to uids 0" in done.stdout


def test_check_exits_2_naming_the_fault(workdir: Path, store: Store) -> None:
    good = config_text(workdir, store, allow=ALLOW_ROOT)
    cases = {
        "unknown key": good.replace("[limits]\n", "[limits]\nmax_conections = 5\n"),
        "bad duration": good.replace('idle_timeout = "2s"', 'idle_timeout = "soon"'),
        "bad template": good
        + '\n[[template]]\ncontents = "{{ secret(\'app/k\') "\ndestination = "/tmp/x.conf"\n',
        "missing store": good.replace(str(store.root), str(workdir / "nowhere")),
    }
    for label, text in cases.items():
        config = workdir / "bad.toml"
        config.write_text(text)
        config.chmod(0o600)
        done = check_config(config)
        assert done.returncode == 2, (label, done.stdout, done.stderr)
        assert done.stderr.startswith("secretd: "), label
        assert "Traceback" not in done.stderr, label
    store.key.chmod(0o644)
    config = workdir / "loose-key.toml"
    config.write_text(good)
    config.chmod(0o600)
    done = check_config(config)
    assert done.returncode == 2
    assert str(store.key) in done.stderr


async def test_sigterm_while_a_declared_secret_hangs_at_start(workdir: Path, store: Store) -> None:
    """A backend that accepts and never answers holds the preload; SIGTERM still stops
    the agent within 5 s (the socket exists already, clients wait in the backlog)."""
    import socket as sockets

    silent = sockets.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    token = workdir / "vault.token"
    token.write_text("s.not-a-real-token\n")
    token.chmod(0o600)
    vault = (
        f'[backends.vault]\ntype = "vault"\nmount = "vault/"\n'
        f'address = "http://127.0.0.1:{port}"\ntimeout = "30s"\n'
        f'auth = {{ method = "token", token_file = "{token}" }}\n\n'
    )
    config = workdir / "hang.toml"
    config.write_text(config_text(workdir, store, allow=ALLOW_ROOT, declared=("vault/x",)) + vault)
    config.chmod(0o600)
    agent = AgentProcess(workdir, config)
    try:
        agent.start()
        async with asyncio.timeout(20):
            while not agent.socket.exists():
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # well into the preload
        took = await asyncio.to_thread(agent.stop)
        assert took < 5.0
        assert agent.proc is not None and agent.proc.returncode == 0
        assert not agent.socket.exists()
    finally:
        agent.kill()
        silent.close()

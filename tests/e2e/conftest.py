"""Fixtures for end-to-end tests: a store made with the real CLI, a config, the agent."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agent_proc import AgentProcess, Store, config_text, short_tmp, write_config

StartAgent = Callable[..., Awaitable[AgentProcess]]


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Short (Unix socket paths are capped at 108 bytes) and traversable by a second uid.
    with short_tmp("sde") as path:
        path.chmod(0o755)
        yield path


@pytest.fixture
def store(workdir: Path) -> Store:
    return Store.create(workdir)


@pytest.fixture
async def start_agent(workdir: Path, store: Store) -> AsyncIterator[StartAgent]:
    """`await start_agent(allow=..., limits=..., env=...)`: a ready agent on workdir/s.sock."""
    started: list[AgentProcess] = []

    async def start(*, env: dict[str, str] | None = None, **config: Any) -> AgentProcess:
        config.setdefault("allow", ALLOW_ROOT)
        path = write_config(
            workdir / f"secretd{len(started)}.toml", config_text(workdir, store, **config)
        )
        agent = AgentProcess(workdir, path, env=env or {})
        started.append(agent)
        agent.start()
        await agent.wait_ready()
        return agent

    yield start
    for agent in started:
        agent.kill()


ALLOW_ROOT = '[[allow]]\nsecrets = ["app/**", "demo/*"]\nuids = [0]\n\n'

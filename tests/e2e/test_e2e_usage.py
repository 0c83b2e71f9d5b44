"""The unused-secret report through the real agent: every surface that hands out a
value counts a read (HTTP, the AWS- and Vault-compatible routes, `secretd exec`, a template,
a systemd credential); the counts survive a restart in the state directory
(values never); `secretd status --json`, `secretd unused` and the last-read
metric show them."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.agent_proc import BIN, Store
from tests.e2e.conftest import ALLOW_ROOT, StartAgent
from tests.fakes.credential_client import load_credential
from tests.servers.second_user import can_switch_users, ensure_test_user, run_as

VALUES = {
    "app/api": b"value-api-7c1",
    "app/aws": b"value-aws-9d2",
    "app/vault": b'{"k": "value-vault-2c3"}',
    "app/exec": b"value-exec-3e4",
    "app/tpl": b"value-tpl-5f6",
    "app/cred": b"value-cred-8a9",
    "app/never": b"value-never-0b1",
}


def extra_sections(workdir: Path) -> str:
    return (
        ALLOW_ROOT + f"[[template]]\ncontents = \"{{{{ secret('app/tpl') }}}}\"\n"
        f'destination = "{workdir}/tpl.out"\n\n'
        '[[credential]]\nunit = "app.service"\nid = "pw"\nsecret = "app/cred"\n\n'
        '[vault_api]\nmount = "secret"\n\n'
    )


def reads_of(status: subprocess.CompletedProcess[bytes]) -> dict[str, int]:
    return {row["name"]: row["reads"] for row in json.loads(status.stdout)["secrets"]}


def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(BIN), *args], capture_output=True, timeout=30, check=False)


async def test_reads_of_every_surface_are_counted_kept_across_restart_and_reported(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    for name, value in VALUES.items():
        store.put(name, value)
    config = {"allow": extra_sections(workdir), "declared": ("app/api",)}
    agent = await start_agent(**config)
    sock = str(agent.socket)
    async with agent.session() as http:
        for _ in range(2):
            assert (await http.get("/v1/secrets/app/api")).status == 200
        aws = await http.get("/secretsmanager/get", params={"secretId": "app/aws"})
        assert aws.status == 200
        assert (await http.get("/v1/secret/data/app/vault")).status == 200
        assert (await http.get("/v1/secrets/app/missing")).status == 404  # no value: no read
    done = await asyncio.to_thread(
        cli, "exec", "--socket", sock, "--env", "X=app/exec", "--", "true"
    )
    assert done.returncode == 0, done.stderr.decode()
    assert await asyncio.to_thread(load_credential, sock, "app.service", "pw") == b"value-cred-8a9"
    assert (workdir / "tpl.out").read_bytes() == b"value-tpl-5f6"
    rendered_before = reads_of(await asyncio.to_thread(cli, "status", "--json", "--socket", sock))
    assert rendered_before["app/tpl"] >= 1
    agent.stop()

    state = (workdir / "state" / "usage.json").read_bytes()
    for value in VALUES.values():
        assert value not in state
    agent = await start_agent(**config)

    status = await asyncio.to_thread(cli, "status", "--json", "--socket", sock)
    rows = {row["name"]: row for row in json.loads(status.stdout)["secrets"]}
    assert rows["app/api"]["reads"] == 2  # declared: loading it at start is not a read
    assert rows["app/never"]["reads"] == 0
    assert rows["app/never"]["last_read"] is None
    for name in ("app/aws", "app/vault", "app/exec", "app/cred"):
        assert rows[name]["reads"] == 1, name
        assert rows[name]["last_read"] is not None
    # Each start renders the template: the second start's renders add to the first's.
    assert rows["app/tpl"]["reads"] > rendered_before["app/tpl"]

    unused = await asyncio.to_thread(cli, "unused", "--for", "1h", "--json", "--socket", sock)
    assert unused.returncode == 0, unused.stderr.decode()
    listed = {row["name"]: row for row in json.loads(unused.stdout)["unused"]}
    assert list(listed) == ["app/never"]
    assert listed["app/never"] == {"name": "app/never", "last_read": None, "reads": 0}
    text = await asyncio.to_thread(cli, "unused", "--socket", sock)
    assert b"app/never" in text.stdout and b"app/api" not in text.stdout

    async with agent.session() as http:
        metrics = await (await http.get("/metrics")).text()
    lines = [
        line
        for line in metrics.splitlines()
        if line.startswith('secretd_secret_last_read_timestamp_seconds{secret="app/api"}')
    ]
    assert len(lines) == 1 and float(lines[0].split()[-1]) > 1.7e9


async def test_another_user_sees_only_the_secrets_a_rule_lets_it_read(
    store: Store, start_agent: StartAgent
) -> None:
    if not can_switch_users():
        pytest.skip("needs root and setpriv to run a client as another uid")
    user = ensure_test_user()
    for name in ("app/a", "app/b", "app/c"):
        store.put(name, b"v-" + name.encode())
    rule = f'[[allow]]\nsecrets = ["app/a"]\nuids = [{user.uid}]\n\n'
    agent = await start_agent(allow=ALLOW_ROOT + rule)
    sock = str(agent.socket)
    argv = [str(BIN), "unused", "--for", "0s", "--json", "--socket", sock]
    as_root = await asyncio.to_thread(cli, *argv[1:])
    assert [r["name"] for r in json.loads(as_root.stdout)["unused"]] == ["app/a", "app/b", "app/c"]
    as_other = await asyncio.to_thread(run_as, user, argv)
    assert as_other.returncode == 0, as_other.stderr.decode()
    assert [r["name"] for r in json.loads(as_other.stdout)["unused"]] == ["app/a"]

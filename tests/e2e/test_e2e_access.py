"""Access rules decided from SO_PEERCRED, exercised by a real second uid (setpriv)."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from tests.e2e.agent_proc import BIN, Store
from tests.e2e.conftest import ALLOW_ROOT, StartAgent
from tests.servers.second_user import (
    RAW_REQUEST,
    TestUser,
    ensure_test_user,
    needs_root,
    raw_request_as,
    run_as,
    run_python_as,
)

pytestmark = needs_root


def get_as(user: TestUser, socket_path: str, target: str) -> tuple[int, bytes]:
    head, _, body = raw_request_as(user, socket_path, f"GET {target}").partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_second_uid_gets_identical_403_and_a_deny_line(
    store: Store, start_agent: StartAgent
) -> None:
    user = ensure_test_user()
    store.put("app/k", b"root-only-value")
    store.put("shared/k", b"shared-value")
    allow = ALLOW_ROOT + f'[[allow]]\nsecrets = ["shared/*"]\nuids = [{user.uid}]\n'
    agent = await start_agent(allow=allow)
    sock = str(agent.socket)

    existing = await asyncio.to_thread(get_as, user, sock, "/v1/secrets/app/k")
    missing = await asyncio.to_thread(get_as, user, sock, "/v1/secrets/app/nothing-here")
    assert existing[0] == missing[0] == 403
    a, b = orjson.loads(existing[1]), orjson.loads(missing[1])
    assert a["error"]["code"] == b["error"]["code"] == "forbidden"
    assert a["error"]["message"].replace("app/k", "N") == b["error"]["message"].replace(
        "app/nothing-here", "N"
    )
    assert b"root-only-value" not in existing[1]

    status, body = await asyncio.to_thread(get_as, user, sock, "/v1/secrets/shared/k")
    assert status == 200 and orjson.loads(body)["value"] == "shared-value"

    listed = await asyncio.to_thread(get_as, user, sock, "/v1/secrets")
    assert [s["name"] for s in orjson.loads(listed[1])["secrets"]] == ["shared/k"]

    lines = [orjson.loads(x) for x in agent.audit_path.read_bytes().splitlines()]
    denies = [x for x in lines if x["event"] == "deny"]
    assert {d["secret"] for d in denies} == {"app/k", "app/nothing-here"}
    assert all(d["caller"]["uid"] == user.uid and d["result"] == "deny" for d in denies)
    reads = [x for x in lines if x["event"] == "read" and x["caller"]["uid"] == user.uid]
    assert [r["secret"] for r in reads] == ["shared/k"]

    # root still reads what its rule allows; the denied probes asked no backend
    async with agent.session() as http:
        assert (await http.get("/v1/secrets/app/k")).status == 200


async def test_socket_mode_keeps_others_out(store: Store, start_agent: StartAgent) -> None:
    """With socket_mode 0600 another uid cannot even connect."""
    user = ensure_test_user()
    store.put("app/k", b"v")
    agent = await start_agent(allow=ALLOW_ROOT)
    agent.socket.chmod(0o600)
    done = await asyncio.to_thread(
        run_python_as, user, RAW_REQUEST, str(agent.socket), "GET /v1/health"
    )
    assert done.returncode != 0
    assert b"PermissionError" in done.stderr


def _tamper(store: Store, name: str) -> str:
    """Corrupt the newest ciphertext of `name`'s record; returns the record's file name."""
    record = store.record_path(name)
    document = orjson.loads(record.read_bytes())
    blob = document["versions"][-1]["ciphertext"]
    document["versions"][-1]["ciphertext"] = ("A" if blob[0] != "A" else "B") + blob[1:]
    staged = record.with_suffix(".tmp")
    staged.write_bytes(orjson.dumps(document))
    staged.replace(record)
    return record.name


async def test_health_names_only_what_the_caller_may_read(
    store: Store, start_agent: StartAgent
) -> None:
    """Template and backend errors name secrets and store paths; another uid sees
    the names its rules let it read, and a code for the rest; root sees it all."""
    user = ensure_test_user()
    store.put("app/k", b'{"a": 1}')
    store.put("app/tampered", b"v1")
    store.put("shared/k", b'{"a": 1}')
    workdir = store.root.parent
    templates = "".join(
        f"[[template]]\ncontents = \"{{{{ secret('{name}', field='nope') }}}}\"\n"
        f'destination = "{workdir}/{dest}"\n\n'
        for name, dest in (("app/k", "hidden.conf"), ("shared/k", "shared.conf"))
    )
    allow = ALLOW_ROOT + f'[[allow]]\nsecrets = ["shared/*"]\nuids = [{user.uid}]\n\n' + templates
    agent = await start_agent(allow=allow)
    async with agent.session() as http:
        assert (await http.get("/v1/secrets/app/tampered")).status == 200
        record = _tamper(store, "app/tampered")
        refreshed = await http.get("/v1/secrets/app/tampered?refresh=true")
        assert (await refreshed.json())["stale"] is True  # the last good value, kept
        root_view = await (await http.get("/v1/health")).text()
    hidden = ["app/k", "app/tampered", str(store.root), record, record.removesuffix(".secret")]
    # root: every detail (the backend error names the tampered secret and its file)
    assert [word for word in hidden if word not in root_view] == []
    assert "shared/k" in root_view and "nope" in root_view

    status, body = await asyncio.to_thread(get_as, user, str(agent.socket), "/v1/health")
    assert status == 200
    shown = body.decode()
    assert [word for word in hidden if word in shown] == []
    health = orjson.loads(body)
    by_dest = {t["destination"].rsplit("/", 1)[-1]: t for t in health["templates"]}
    assert "secret shared/k" in by_dest["shared.conf"]["last_error"]
    assert "may not read" in by_dest["hidden.conf"]["last_error"]
    assert health["backends"]["local"]["ok"] is False
    assert health["backends"]["local"]["last_error"]  # generic, but says it failed
    assert health["detail"] == "summary"

    done = await asyncio.to_thread(
        run_as, user, [str(BIN), "status", "--socket", str(agent.socket)]
    )
    text = (done.stdout + done.stderr).decode()
    assert "shared/k" in text and [word for word in hidden if word in text] == [], text
    assert "root" in text  # it says where the details are


async def test_a_denial_says_who_the_agent_saw_and_that_no_rule_matched(
    store: Store, start_agent: StartAgent
) -> None:
    """The same words for an existing and a missing name; `secretd get` adds what to do."""
    user = ensure_test_user()
    store.put("app/k", b"root-only-value")
    agent = await start_agent()
    sock = str(agent.socket)
    for name in ("app/k", "app/nothing-here"):
        status, body = await asyncio.to_thread(get_as, user, sock, f"/v1/secrets/{name}")
        assert status == 403
        assert orjson.loads(body)["error"]["message"] == (
            f"not allowed to read {name}: no [[allow]] rule matches "
            f"uid {user.uid}, gid {user.gid}, no systemd unit"
        )
    done = await asyncio.to_thread(run_as, user, [str(BIN), "get", "app/k", "--socket", sock])
    assert done.returncode == 1
    line = done.stderr.decode()
    assert line.count("\n") == 1, line
    assert f"no [[allow]] rule matches uid {user.uid}" in line
    assert "add an [[allow]] rule" in line and "reload" in line
    assert b"root-only-value" not in done.stdout + done.stderr


# Runs as the second user: `count` forbidden reads on one keep-alive connection,
# through both read APIs, bounded in time too; prints how many were refused
# (403, or the AWS agent's 400 AccessDeniedException).
FLOOD = """
import http.client, socket, sys, time
class C(http.client.HTTPConnection):
    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(10)
        s.connect(sys.argv[1]); self.sock = s
conn, refused = C("localhost", timeout=10), 0
deadline = time.monotonic() + 90
for i in range(int(sys.argv[2])):
    if time.monotonic() > deadline:
        break
    name = f"app/probe-{i % 7}"
    conn.request("GET", f"/v1/secrets/{name}" if i % 2 else f"/secretsmanager/get?secretId={name}")
    answer = conn.getresponse()
    body = answer.read()
    refused += answer.status == 403 or b"AccessDeniedException" in body
print(refused)
"""


@pytest.mark.timeout(180)
async def test_a_flood_of_denials_is_audited_in_bounded_lines_with_exact_counts(
    store: Store, start_agent: StartAgent
) -> None:
    """20,000 denials wrote 20,000 audit lines: any local user could fill the log
    disk. Now a caller's denials beyond a small burst - through either API, one
    budget - become summary lines that still count every one; other callers'
    reads are each audited as before."""
    flooder = ensure_test_user()
    store.put("app/k", b"v")
    agent = await start_agent(allow=ALLOW_ROOT)
    flood = asyncio.create_task(
        asyncio.to_thread(run_python_as, flooder, FLOOD, str(agent.socket), "5000", timeout=120)
    )
    reads = 0
    async with agent.session() as http:
        while not flood.done() or reads < 20:
            assert (await http.get("/v1/secrets/app/k")).status == 200
            reads += 1
            await asyncio.sleep(0.01)
        metrics = await (await http.get("/metrics")).text()
    done = await flood
    assert done.returncode == 0, done.stderr.decode()
    assert int(done.stdout) == 5000  # every one still answered 403
    assert 'secretd_reads_total{result="forbidden"} 5000.0' in metrics
    agent.stop()  # flushes the summaries still open

    lines = [orjson.loads(x) for x in agent.audit_path.read_bytes().splitlines()]
    mine = [x for x in lines if x["event"] == "deny" and x["caller"]["uid"] == flooder.uid]
    single = [x for x in mine if x["result"] == "deny"]
    summaries = [x for x in mine if x["result"] == "deny_suppressed"]
    assert len(mine) <= 50, len(mine)
    assert summaries and len(single) + sum(x["count"] for x in summaries) == 5000
    for summary in summaries:
        assert summary["secret"] is None and summary["first"] <= summary["last"]
    assert max(x["distinct_secrets"] for x in summaries) == 7
    root_reads = [x for x in lines if x["event"] == "read" and x["caller"]["uid"] == 0]
    assert len(root_reads) == reads and all(x["result"] == "ok" for x in root_reads)

"""`LoadCredential=ID:SOCKET` under systemd as PID 1: the service manager itself
asks the agent (on the API socket and on the dedicated credentials socket) and
the unit reads the answer from `$CREDENTIALS_DIRECTORY`, byte for byte."""

from __future__ import annotations

import json

import pytest

from tests.system.rig import CREDENTIALS_SOCKET, SEEDS, SOCKET, Rig

pytestmark = pytest.mark.timeout(300)

PASSWORD = json.loads(SEEDS["app/db"])["password"].encode()


def consumer(rig: Rig, name: str, socket: str, ids: tuple[str, ...], *, guard: bool) -> str:
    """A oneshot unit `name` that loads `ids` from `socket` and copies them to out/."""
    loads = "".join(f"LoadCredential={cred}:{socket}\n" for cred in ids)
    guards = "".join(f"ExecStartPre=/usr/bin/test -s %d/{cred}\n" for cred in ids) if guard else ""
    rig.add_unit(
        name,
        "[Unit]\nAfter=secretd.socket\nWants=secretd.socket\n\n"
        f"[Service]\nType=oneshot\n{loads}{guards}"
        f"ExecStart=/usr/bin/python3 {rig.run_dir}/bin/copy-credentials.py "
        f"{rig.out}/{name} {' '.join(ids)}\n",
    )
    return name


def audit(rig: Rig, unit: str) -> list[dict[str, object]]:
    lines = rig.machine.run("cat", "/var/log/secretd/audit.jsonl").stdout.splitlines()
    entries = [json.loads(line) for line in lines]
    return [e for e in entries if e["event"] == "credential" and e["unit_requested"] == unit]


def test_a_unit_gets_the_exact_value_and_field_from_the_api_socket(rig: Rig) -> None:
    rig.serving()
    unit = consumer(rig, "cred-api.service", SOCKET, ("db-password", "api-key"), guard=True)
    rig.machine.systemctl("start", unit)
    assert (rig.out / unit / "db-password").read_bytes() == PASSWORD  # a field of JSON
    assert (rig.out / unit / "api-key").read_bytes() == SEEDS["app/api"]  # not UTF-8
    # systemd 252 asks again for every command it runs (ExecStartPre= too).
    answered = audit(rig, unit)
    assert {e["credential"] for e in answered} == {"db-password", "api-key"}
    assert {e["result"] for e in answered} == {"ok"}
    assert {e["caller"]["uid"] for e in answered} == {0}  # type: ignore[index]


def test_a_unit_gets_it_from_the_dedicated_credentials_socket(rig: Rig) -> None:
    rig.serving()
    assert rig.machine.state("secretd-credentials.socket") == "active"
    unit = consumer(rig, "cred-dedicated.service", CREDENTIALS_SOCKET, ("db-password",), guard=True)
    rig.machine.systemctl("start", unit)
    assert (rig.out / unit / "db-password").read_bytes() == PASSWORD


def test_an_unmatched_id_gets_nothing_and_the_documented_guard_fails_the_unit(
    rig: Rig,
) -> None:
    rig.serving()
    # Without the guard, systemd starts the unit with an empty credential file.
    bare = consumer(rig, "cred-bare.service", SOCKET, ("no-such-id",), guard=False)
    rig.machine.systemctl("start", bare)
    assert (rig.out / bare / "no-such-id").read_bytes() == b""
    assert {e["result"] for e in audit(rig, bare)} == {"no_match"}

    # With ExecStartPre=/usr/bin/test -s %d/ID (docs/operating.md) it fails to start.
    guarded = consumer(rig, "cred-guarded.service", SOCKET, ("no-such-id",), guard=True)
    assert rig.machine.systemctl("start", guarded, check=False).returncode != 0
    props = rig.machine.show(guarded, "ActiveState", "Result")
    assert (props["ActiveState"], props["Result"]) == ("failed", "exit-code")
    assert not (rig.out / guarded).exists()  # ExecStart= never ran

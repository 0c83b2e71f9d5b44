"""Access rules enforced by a real agent, for real callers: other uids,
supplementary groups and processes inside (system and user-manager) unit
cgroups. Denials are identical for existing and missing names and audited."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import orjson
import pytest

from tests.servers.canary_agent import AgentProcess, file_store_config, running_agent
from tests.servers.second_user import (
    OTHER_USER,
    TEST_GROUP,
    ensure_group,
    ensure_test_user,
    needs_cgroup,
    unit_cgroup,
)

pytestmark = [
    needs_cgroup,
    pytest.mark.timeout(120),  # the first test also starts the agent
]

UNIT = f"secretd-acl-{os.getpid()}.service"
AGENT_KEYS = 'socket_mode = "0666"\naudit_log = "$root/audit.jsonl"\n'
CONFIG = file_store_config(
    agent=AGENT_KEYS,
    rest=f"""[[allow]]
secrets = ["db/*"]
units = ["{UNIT}"]

[[allow]]
secrets = ["shared/**"]
groups = ["{TEST_GROUP}"]

[[allow]]
secrets = ["user/*"]
users = ["secretd-test"]
""",
)
VALUES = [("db/app", b"db-value"), ("shared/a/b", b"shared-value"), ("user/x", b"user-value")]


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    ensure_test_user()
    ensure_test_user(OTHER_USER)
    ensure_group()
    with running_agent(CONFIG, VALUES) as running:
        yield running


def audit_lines(agent: AgentProcess) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in agent.audit_path.read_bytes().splitlines()]


def test_a_unit_rule_admits_only_processes_in_that_system_unit(agent: AgentProcess) -> None:
    user = ensure_test_user()
    outside = agent.request_as(user, "/v1/secrets/db/app?format=raw")
    with unit_cgroup(f"system.slice/{UNIT}") as enter:
        inside = agent.request_as(user, "/v1/secrets/db/app?format=raw", enter=enter)
    manager = f"user.slice/user-{user.uid}.slice/user@{user.uid}.service/app.slice/{UNIT}"
    with unit_cgroup(manager) as enter:
        user_unit = agent.request_as(user, "/v1/secrets/db/app?format=raw", enter=enter)
    assert outside.status == 403
    assert (inside.status, inside.body) == (200, b"db-value")
    assert user_unit.status == 403  # the same name in a user's own manager is not the unit
    denied_units = [
        line["caller"]["unit"]  # type: ignore[index]
        for line in audit_lines(agent)
        if line["event"] == "deny" and line["secret"] == "db/app"
    ]
    assert f"user@{user.uid}.service/{UNIT}" in denied_units


def test_a_group_rule_follows_the_process_supplementary_groups(agent: AgentProcess) -> None:
    user, gid = ensure_test_user(), ensure_group()
    without = agent.request_as(user, "/v1/secrets/shared/a/b?format=raw")
    member = agent.request_as(user, "/v1/secrets/shared/a/b?format=raw", groups=[gid])
    assert without.status == 403
    assert (member.status, member.body) == (200, b"shared-value")


def test_a_users_rule_admits_that_user_only(agent: AgentProcess) -> None:
    allowed = agent.request_as(ensure_test_user(), "/v1/secrets/user/x?format=raw")
    other = agent.request_as(ensure_test_user(OTHER_USER), "/v1/secrets/user/x?format=raw")
    assert (allowed.status, allowed.body) == (200, b"user-value")
    assert other.status == 403


def test_denials_are_identical_for_existing_and_missing_names(agent: AgentProcess) -> None:
    other = ensure_test_user(OTHER_USER)
    existing = agent.request_as(other, "/v1/secrets/db/app")
    missing = agent.request_as(other, "/v1/secrets/db/nope")
    assert existing.status == missing.status == 403
    assert existing.body.replace(b"db/app", b"X") == missing.body.replace(b"db/nope", b"X")
    denies = [
        line
        for line in audit_lines(agent)
        if line["event"] == "deny" and line["caller"]["uid"] == other.uid  # type: ignore[index]
    ]
    assert {line["secret"] for line in denies} >= {"db/app", "db/nope"}


def test_root_is_not_allowed_without_a_rule(agent: AgentProcess) -> None:
    assert agent.request("/v1/secrets/db/app").status == 403
    listing = orjson.loads(agent.request("/v1/secrets?prefix=").body)
    assert listing["secrets"] == []


def test_sighup_reopens_a_moved_audit_log(agent: AgentProcess) -> None:
    rotated = agent.audit_path.with_name("audit.jsonl.1")
    os.rename(agent.audit_path, rotated)
    agent.reload()
    agent.request("/v1/secrets/db/app")  # root is denied: one audit line
    assert stat.S_IMODE(agent.audit_path.stat().st_mode) == 0o600
    denials = [line for line in audit_lines(agent) if line["event"] == "deny"]
    assert [line["secret"] for line in denials] == ["db/app"]
    size = rotated.stat().st_size
    agent.request("/v1/secrets/db/app")
    assert rotated.stat().st_size == size  # nothing more goes to the moved file

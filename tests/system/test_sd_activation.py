"""Socket activation, readiness and stop under systemd as PID 1, with the
packaged secretd.socket and secretd.service."""

from __future__ import annotations

import pytest

from tests.system.rig import SERVICE, SOCKET, Rig, when

pytestmark = pytest.mark.timeout(300)  # the first test of the tier may build the venv

CLD_EXITED = "1"  # ExecMainCode: the process exited (rather than being killed)


def test_the_first_connection_activates_the_agent_which_is_active_only_once_ready(
    rig: Rig,
) -> None:
    rig.put("app/hello", b"hello-activated")
    rig.serving()
    rig.machine.systemctl("stop", SERVICE)
    assert rig.machine.state(SERVICE) == "inactive"
    assert rig.machine.state("secretd.socket") == "active"

    assert rig.get("app/hello").stdout == "hello-activated"  # the first connection

    props = rig.machine.show(
        SERVICE,
        "ActiveState",
        "Type",
        "NotifyAccess",
        "StatusText",
        "TriggeredBy",
        "ExecMainStartTimestamp",
        "ActiveEnterTimestamp",
    )
    assert props["ActiveState"] == "active"
    assert (props["Type"], props["NotifyAccess"]) == ("notify", "main")
    assert props["StatusText"] == "serving"  # sent with READY=1 on systemd's notify socket
    assert "secretd.socket" in props["TriggeredBy"].split()
    # systemd made it active when READY=1 arrived, after the agent served, not at exec.
    started = when(props["ExecMainStartTimestamp"])
    serving = when(rig.agent_event("agent.serving", since=started)["timestamp"])
    assert started < serving <= when(props["ActiveEnterTimestamp"])


def test_stop_exits_cleanly_within_5_seconds_and_the_socket_stays(rig: Rig) -> None:
    rig.put("app/hello", b"hello-again")
    rig.serving()
    before = rig.main_pid()
    rig.machine.systemctl("stop", SERVICE)
    props = rig.machine.show(
        SERVICE,
        "ActiveState",
        "Result",
        "ExecMainCode",
        "ExecMainStatus",
        "ActiveExitTimestamp",
        "InactiveEnterTimestamp",
    )
    assert (props["ActiveState"], props["Result"]) == ("inactive", "success")
    assert (props["ExecMainCode"], props["ExecMainStatus"]) == (CLD_EXITED, "0")
    # The contract (docs/api.md): SIGTERM stops the agent within 5 s. systemd's own clock.
    took = when(props["InactiveEnterTimestamp"]) - when(props["ActiveExitTimestamp"])
    assert took.total_seconds() < 5.0

    assert rig.machine.state("secretd.socket") == "active"
    rig.machine.run("test", "-S", SOCKET)  # still there, still systemd's
    assert rig.get("app/hello").stdout == "hello-again"  # and starts the agent again
    assert rig.main_pid() not in (0, before)

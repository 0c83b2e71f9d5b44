"""The watchdog: an agent whose event loop stops pinging (here: SIGSTOP) is
killed by systemd and restarted (Restart=on-failure), and serves again."""

from __future__ import annotations

import pytest

from tests.system.rig import SERVICE, Rig, eventually

pytestmark = pytest.mark.timeout(300)

# Short for the test only: the unit ships WatchdogSec=30s. This drop-in changes
# nothing else (no hardening line).
WATCHDOG = "[Service]\nWatchdogSec=3s\n"


def test_a_stopped_agent_is_killed_by_the_watchdog_and_restarted(rig: Rig) -> None:
    dropin = rig.machine.unit_dir / f"{SERVICE}.d/20-watchdog.conf"
    try:
        dropin.write_text(WATCHDOG)
        rig.machine.systemctl("daemon-reload")
        rig.dirty = True  # restart under the new watchdog
        rig.serving()
        before = rig.machine.show(SERVICE, "MainPID", "NRestarts", "WatchdogUSec")
        assert before["WatchdogUSec"] == "3s"

        rig.machine.systemctl("kill", "--kill-whom=main", "--signal=SIGSTOP", SERVICE)
        status = rig.machine.run("cat", f"/proc/{before['MainPID']}/status").stdout
        assert "State:\tT (stopped)" in status

        def restarted() -> bool:
            now = rig.machine.show(SERVICE, "MainPID", "ActiveState")
            return now["ActiveState"] == "active" and now["MainPID"] not in ("0", before["MainPID"])

        eventually(restarted, 60, "a new agent, active")
        after = rig.machine.show(SERVICE, "NRestarts")
        assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
        rig.console_says("secretd.service: Watchdog timeout")
        assert rig.get("app/rotating").returncode == 0  # and it serves again
    finally:
        dropin.unlink(missing_ok=True)
        rig.machine.systemctl("daemon-reload")
        rig.dirty = True

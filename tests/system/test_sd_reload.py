"""`systemctl reload secretd` (ExecReload= sends SIGHUP): a broken config is
rejected and the running agent keeps serving the old one; a good one applies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.system.rig import SERVICE, Rig, base_config, eventually

pytestmark = pytest.mark.timeout(300)

NEW_TEMPLATE = """
[[template]]
destination = "/run/secretd/reloaded.env"
format = "env"
vars = { ROTATING = "app/rotating" }
"""


def test_reload_keeps_the_old_config_on_error_and_applies_a_good_one(rig: Rig) -> None:
    rig.serving()
    pid = rig.main_pid()
    since = datetime.now(UTC).replace(tzinfo=None)
    try:
        rig.write_config(base_config(rig.run_dir, NEW_TEMPLATE + "\n[no_such_section]\nx = 1\n"))
        rig.machine.systemctl("reload", SERVICE)
        rig.status_text("serving (reload rejected; old config in use)")
        assert rig.machine.state(SERVICE) == "active"
        rig.agent_event("config.reload_rejected", since=since)
        assert rig.main_pid() == pid
        assert rig.get("app/rotating").returncode == 0  # the old agent still serves
        assert not rig.exists("/run/secretd/reloaded.env")

        rig.write_config(base_config(rig.run_dir, NEW_TEMPLATE))
        rig.machine.systemctl("reload", SERVICE)
        rig.status_text("serving (reloaded)")
        assert rig.machine.state(SERVICE) == "active"
        assert rig.main_pid() == pid  # reloaded in place, not restarted
        eventually(lambda: rig.exists("/run/secretd/reloaded.env"), 30, "the new template")
    finally:
        rig.dirty = True  # the next test starts from the base config again

"""One systemd for the whole real-systemd tier (tests/system).

The `rig` fixture boots systemd 252 as PID 1 in private namespaces
(tests.system.machine), installs secretd's own units (tests.system.rig) and
tears everything down by PID at the end, even when a test failed; then it
checks that nothing leaked: no process left in the machine's cgroup, the
cgroup gone, a canary file in the host's /tmp still there. Tests isolate by
unit names and files in the run directory, and start from `rig.serving()`.

Where namespaces are not permitted the tier is skipped with the reason;
`SECRETD_REQUIRE_SYSTEM_TESTS=1` (set by .ci/run) makes that a failure, so CI
cannot pass without running it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.install import PYTHON, ROOT, agent_venv, ensure_secretd_user
from tests.system.machine import (
    Machine,
    cgroup_procs,
    claim,
    namespaces_work,
    process_start,
    sweep_stale_runs,
)
from tests.system.rig import SEEDS, Rig, install_units, prepare_run

REQUIRED = os.environ.get("SECRETD_REQUIRE_SYSTEM_TESTS") == "1"
CANARY = "the host's /tmp must survive the tier\n"
CANARY_PREFIX = "secretd-systest-canary-"


def _unavailable() -> str | None:
    reason = namespaces_work()
    if reason is not None:
        return reason
    probe = subprocess.run(
        [str(PYTHON), "-c", "import ensurepip, venv"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return f"{PYTHON} cannot make a venv (install python3-venv)"
    return None


def _private_tmp_dirs() -> set[Path]:
    return {*Path("/tmp").glob("systemd-private-*"), *Path("/var/tmp").glob("systemd-private-*")}


@pytest.fixture(scope="package")
def rig() -> Iterator[Rig]:
    reason = _unavailable()
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"SECRETD_REQUIRE_SYSTEM_TESTS=1 but: {reason}", pytrace=False)
        pytest.skip(f"real-systemd tier: {reason}")
    ensure_secretd_user()
    venv = agent_venv()
    sweep_stale_runs(ROOT)
    for stale in Path("/tmp").glob(f"{CANARY_PREFIX}*"):
        if not (ROOT / stale.name.removeprefix(CANARY_PREFIX)).exists():
            stale.unlink(missing_ok=True)
    run_dir = ROOT / f"run-{secrets.token_hex(4)}"
    run_dir.mkdir()
    claim(run_dir)
    canary = Path(f"/tmp/{CANARY_PREFIX}{run_dir.name}")
    canary.write_text(CANARY)
    private_dirs = _private_tmp_dirs()
    machine: Machine | None = None
    try:
        prepare_run(run_dir, venv)
        units = run_dir / "units"
        install_units(units, venv=venv, config=run_dir / "etc/secretd.toml", rw_dir=run_dir / "rw")
        machine = Machine.boot(run_dir, units)
        rig = Rig(machine, run_dir, venv)
        for name, value in SEEDS.items():
            rig.put(name, value)
        yield rig
    finally:
        if machine is not None:
            machine.shutdown()
            _assert_gone(machine)
        assert canary.read_text() == CANARY, "the host's /tmp was touched"
        assert _private_tmp_dirs() <= private_dirs, "PrivateTmp= directories left on the host"
        canary.unlink()
        shutil.rmtree(run_dir, ignore_errors=True)


def _assert_gone(machine: Machine) -> None:
    """Nothing of the machine is left: no process in its cgroup, no cgroup, no systemd."""
    leaked = cgroup_procs(machine.cgroup) if machine.cgroup.exists() else []
    assert not leaked, f"processes left in {machine.cgroup}: {leaked}"
    assert not machine.cgroup.exists(), f"{machine.cgroup} left"
    assert process_start(machine.pid) is None, "systemd outlived the tier"

"""The hardened unit as shipped: every sandboxing line of
packaging/systemd/secretd.service is in force in the running agent (as systemd
reports it, and as the kernel shows it for the agent's process) while the
other tests of the tier pass; and a template writes into a ReadWritePaths=
directory, the one way out of ProtectSystem=strict."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import pwd
import stat
from collections.abc import Iterator

import pytest

from tests.system.rig import PACKAGED, SEEDS, SERVICE, Rig

pytestmark = pytest.mark.timeout(300)

SHIPPED = PACKAGED / SERVICE
IDENTITY = ("User", "Group", "UMask")


def sandboxing_lines() -> Iterator[tuple[str, str]]:
    """`(key, value)` of every [Service] line from `# Hardening.` on, plus the identity."""
    section, hardening = "", False
    for line in SHIPPED.read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line.startswith("# Hardening"):
            hardening = True
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            if hardening or key in IDENTITY:
                yield key, value


class Syscalls:
    """Syscall sets as systemd resolves them (`systemd-analyze syscall-filter`)."""

    def __init__(self, rig: Rig) -> None:
        self._rig = rig
        self._groups: dict[str, set[str]] = {}

    def expand(self, items: str) -> set[str]:
        names: set[str] = set()
        for item in items.split():
            names |= self._group(item) if item.startswith("@") else {item}
        return names

    def _group(self, group: str) -> set[str]:
        if group not in self._groups:
            out = self._rig.machine.run("systemd-analyze", "syscall-filter", group).stdout
            entries = [line.strip() for line in out.splitlines()[1:]]
            self._groups[group] = self.expand(
                " ".join(e for e in entries if e and not e.startswith("#"))
            )
        return self._groups[group]


def test_every_sandboxing_line_of_the_shipped_unit_is_in_force(rig: Rig) -> None:
    rig.serving()
    lines = list(sandboxing_lines())
    assert len(lines) > 30  # the parse found the block
    shown = rig.machine.show(SERVICE, *{key for key, _ in lines})
    filters = [value for key, value in lines if key == "SystemCallFilter"]
    for key, value in lines:
        if key == "SystemCallFilter":
            continue
        if key == "RestrictAddressFamilies":
            assert set(shown[key].split()) == set(value.split()), key
        elif key == "SystemCallErrorNumber":
            assert errno.errorcode[int(shown[key])] == value, key
        else:
            assert shown[key] == value, f"{key}: shipped {value!r}, in force {shown[key]!r}"
    # An allow list, then deny lists taken out of it: the set systemd enforces.
    syscalls = Syscalls(rig)
    allowed = syscalls.expand(filters[0])
    for denied in filters[1:]:
        assert denied.startswith("~"), denied
        allowed -= syscalls.expand(denied[1:])
    # Names newer than this libseccomp (systemd's groups list them) cannot be filtered.
    libseccomp = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2")
    known = {
        name for name in allowed if libseccomp.seccomp_syscall_resolve_name(name.encode()) != -1
    }
    assert set(shown["SystemCallFilter"].split()) == known
    assert {"chown", "mount", "ptrace", "reboot", "setrlimit"}.isdisjoint(allowed)


def test_the_kernel_enforces_it_on_the_agent_process(rig: Rig) -> None:
    rig.serving()
    pid = rig.main_pid()
    status = dict(
        line.split(":\t", 1)
        for line in rig.machine.run("cat", f"/proc/{pid}/status").stdout.splitlines()
    )
    secretd = pwd.getpwnam("secretd")
    assert status["Uid"].split() == [str(secretd.pw_uid)] * 4
    assert status["Gid"].split() == [str(secretd.pw_gid)] * 4
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # a filter
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, caps
    mounts = {}
    for line in rig.machine.run("cat", f"/proc/{pid}/mountinfo").stdout.splitlines():
        fields = line.split()
        mounts[fields[4]] = (fields[5].split(","), line.split(" - ")[1].split()[0])
    assert "ro" in mounts["/"][0]  # ProtectSystem=strict
    for hidden in ("/home", "/root"):
        assert "ro" in mounts[hidden][0], hidden  # ProtectHome=yes: empty, read-only
    assert "ro" in mounts["/sys/fs/cgroup"][0]  # ProtectControlGroups=yes
    assert mounts["/tmp"][1] == "tmpfs"  # PrivateTmp=yes (a directory of its own)
    assert "rw" in mounts[str(rig.run_dir / "rw")][0]  # ReadWritePaths= (the drop-in)
    assert "rw" in mounts["/run/secretd"][0]  # RuntimeDirectory=


def test_a_template_writes_into_the_read_write_paths_directory(rig: Rig) -> None:
    rig.serving()
    path = rig.run_dir / "rw/app.conf"
    assert path.read_text() == f"password={json.loads(SEEDS['app/db'])['password']}\n"
    st = os.stat(path)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (pwd.getpwnam("secretd").pw_uid, 0o640)

"""systemd as PID 1 in private namespaces: the machine the real-systemd tier runs on.

`Machine.boot(run_dir, unit_dir)` starts `/lib/systemd/systemd --system` as PID
1 of new PID, mount, UTS, IPC and cgroup namespaces, and `Machine.run` /
`Machine.systemctl` reach it through `nsenter`. The host is shared with other
engineers' work, so the namespace is built to leave it alone:

- `SYSTEMD_UNIT_PATH` names exactly one directory, the run's own, and never
  ends in a colon (a trailing colon adds the distribution's units, whose
  tmpfiles setup would empty the host's /tmp);
- private tmpfs over /tmp, /var/tmp (PrivateTmp= makes its directories
  there), /run, /var/lib and /var/log, and an overlay over
  /etc whose writes land in the run directory, so what the units create there
  (StateDirectory=, ConfigurationDirectory=, ...) never reaches the host;
- /proc/sys read-only and `container=` set: PID 1 would otherwise tune host
  sysctls (core_pattern, fs.file-max) and load kernel modules. As a
  container manager does, the namespace's mounts are then made shared (a
  container's systemd leaves that to its manager): units get their
  credentials mounted from a child mount namespace by propagation. The
  namespace was made with private propagation, so nothing reaches the host;
- a cgroup of its own, a fresh child of the host's cgroup2 hierarchy that the
  cgroup namespace shows as the root; removed at the end;
- /dev/console is a pty whose output `cat` copies to the run directory's
  `console` file: systemd's own log, and (there is no journald) the output of
  every unit, the agent's JSON log lines among them.

It ends by SIGKILL to systemd's PID, which makes the kernel kill every
process of the PID namespace. If the test process dies first, `setpriv
--pdeathsig` kills `unshare`, and `unshare --kill-child` then kills systemd.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SYSTEMD = Path("/lib/systemd/systemd")
CGROUP2_MOUNTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "SYSTEMD_COLORS": "0"}
BOOT_WITHIN = 30.0
CLEANUP_WITHIN = 10.0
COMMAND_WITHIN = 120.0

# $1 cgroup.procs of the machine's cgroup, $2 run directory, $3 unit directory,
# $4 the pty that becomes /dev/console.
_BOOT = r"""
set -e
echo $$ > "$1"
exec setpriv --pdeathsig KILL -- unshare --pid --kill-child=KILL --mount --uts --ipc \
    --cgroup --propagation private -- /bin/sh -ec '
  mount -t proc proc /proc
  mount --bind /proc/sys /proc/sys
  mount -o remount,bind,ro /proc/sys
  mount -t tmpfs -o mode=1777 tmpfs /tmp
  mount -t tmpfs -o mode=1777 tmpfs /var/tmp
  mount -t tmpfs -o mode=0755 tmpfs /run
  mount -t tmpfs -o mode=0755 tmpfs /var/lib
  mount -t tmpfs -o mode=0755 tmpfs /var/log
  mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/etc.upper,workdir=$1/etc.work" /etc
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
  mount --bind "$3" /dev/console
  mount --make-rshared /
  exec env -i container=secretd-systest "SYSTEMD_UNIT_PATH=$2" \
      /lib/systemd/systemd --system --log-target=console --show-status=no
' sh "$2" "$3" "$4"
"""


class MachineError(AssertionError):
    """The machine did not boot, or a command in it failed."""


def cgroup2_root() -> Path | None:
    """The host's writable cgroup2 hierarchy (unified, or hybrid's `unified`)."""
    for path in CGROUP2_MOUNTS:
        if (path / "cgroup.subtree_control").exists() and os.access(path, os.W_OK):
            return path
    return None


@dataclass
class Machine:
    """One booted systemd; `pid` is its PID on the host."""

    run_dir: Path
    unit_dir: Path
    cgroup: Path
    boot_proc: subprocess.Popen[bytes] | None = None
    console_proc: subprocess.Popen[bytes] | None = None
    console_fd: int | None = None  # the pty's slave, open so the copier never sees EOF
    pid: int = 0

    @classmethod
    def boot(cls, run_dir: Path, unit_dir: Path) -> Machine:
        if ":" in str(unit_dir):
            raise MachineError(f"unit path {unit_dir}: one directory, never a colon")
        root = cgroup2_root()
        if root is None:
            raise MachineError("no writable cgroup2 hierarchy")
        for name in ("etc.upper", "etc.work"):
            (run_dir / name).mkdir()
        manager = run_dir / "etc.upper/systemd/system.conf.d"
        manager.mkdir(parents=True)
        # Units' output to the console (there is no journald): kept over daemon-reload.
        (manager / "secretd-systest.conf").write_text("[Manager]\nDefaultStandardOutput=tty\n")
        machine = cls(run_dir, unit_dir, root / f"secretd-systest-{run_dir.name}")
        try:
            machine.cgroup.mkdir()
            machine._start()
            machine.pid = machine._find_systemd()
            machine._wait_running()
        except BaseException:
            machine.shutdown()
            raise
        return machine

    def _start(self) -> None:
        master, self.console_fd = os.openpty()
        try:
            with (self.run_dir / "console").open("wb") as console:
                self.console_proc = subprocess.Popen(
                    ["cat"], stdin=master, stdout=console, stderr=subprocess.DEVNULL
                )
        finally:
            os.close(master)
        argv = [str(self.cgroup / "cgroup.procs"), str(self.run_dir), str(self.unit_dir)]
        with (self.run_dir / "boot.log").open("wb") as log:
            self.boot_proc = subprocess.Popen(
                ["/bin/sh", "-c", _BOOT, "sh", *argv, os.ttyname(self.console_fd)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=ENV,
                cwd="/",
            )

    def _find_systemd(self) -> int:
        """systemd's host PID: the only child of `unshare` (the boot process itself)."""
        assert self.boot_proc is not None
        children = Path(f"/proc/{self.boot_proc.pid}/task/{self.boot_proc.pid}/children")
        deadline = time.monotonic() + BOOT_WITHIN
        while time.monotonic() < deadline:
            if self.boot_proc.poll() is not None:
                raise MachineError(f"boot failed: {self.log('boot.log')}")
            try:
                pids = children.read_text().split()
                comm = Path(f"/proc/{pids[0]}/comm").read_text().strip() if pids else ""
            except (FileNotFoundError, ProcessLookupError):
                comm = ""
            if comm == "systemd":
                return int(pids[0])
            time.sleep(0.05)
        raise MachineError(f"systemd did not start: {self.log('boot.log')}")

    def _wait_running(self) -> None:
        deadline = time.monotonic() + BOOT_WITHIN
        state = ""
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.1)
        raise MachineError(f"systemd not running ({state!r}): {self.log('console')}")

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`argv` inside the machine (all its namespaces), as root."""
        done = subprocess.run(
            ["nsenter", f"--target={self.pid}", "--all", "--", *argv],
            capture_output=True,
            text=True,
            env=ENV,
            cwd="/",
            timeout=COMMAND_WITHIN,
            check=False,
        )
        if check and done.returncode != 0:
            raise MachineError(
                f"{' '.join(argv)} exited {done.returncode}: {done.stdout}{done.stderr}"
            )
        return done

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = self.run("systemctl", "--no-pager", *args, check=False)
        if check and done.returncode != 0:
            raise MachineError(
                f"systemctl {' '.join(args)} exited {done.returncode}: {done.stderr}\n"
                f"--- console ---\n{self.log('console', tail=3000)}"
            )
        return done

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """`systemctl show` properties (timestamps in microseconds, UTC)."""
        out = self.systemctl("show", "--timestamp=us+utc", unit, *(f"-p{p}" for p in properties))
        pairs = (line.partition("=") for line in out.stdout.splitlines())
        return {key: value for key, _, value in pairs}

    def state(self, unit: str) -> str:
        return self.systemctl("is-active", unit, check=False).stdout.strip()

    def wait_state(self, unit: str, wanted: str | Sequence[str], within: float = 30) -> str:
        """Poll `systemctl is-active` until it says `wanted`; fail after `within` s."""
        accept = (wanted,) if isinstance(wanted, str) else tuple(wanted)
        deadline = time.monotonic() + within
        state = self.state(unit)
        while state not in accept:
            if time.monotonic() > deadline:
                raise MachineError(f"{unit} is {state!r}, not {accept} after {within}s")
            time.sleep(0.1)
            state = self.state(unit)
        return state

    def log(self, name: str, tail: int = 6000) -> str:
        """The end of a log in the run directory (console: systemd's and the units')."""
        try:
            data = (self.run_dir / name).read_bytes()
        except FileNotFoundError:
            return ""
        return data.replace(b"\r", b"").decode(errors="replace")[-tail:]

    def shutdown(self) -> None:
        """Kill systemd by its PID (ending the namespace), then remove the cgroup."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        for proc in (self.boot_proc, self.console_proc):
            if proc is None:
                continue
            if proc is self.console_proc and self.console_fd is not None:
                os.close(self.console_fd)  # the copier reads to the end, then exits
                self.console_fd = None
            try:
                proc.wait(timeout=CLEANUP_WITHIN)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.cgroup.exists():
            remove_cgroup(self.cgroup)


def remove_cgroup(cgroup: Path) -> None:
    """Remove a cgroup tree once the kernel has reaped its processes."""
    deadline = time.monotonic() + CLEANUP_WITHIN
    while cgroup.exists():
        left = [d for d in sorted(cgroup.rglob("*"), reverse=True) if d.is_dir()] + [cgroup]
        try:
            for directory in left:
                directory.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                procs = cgroup_procs(cgroup)
                raise MachineError(f"{cgroup} still busy (processes {procs})") from None
            time.sleep(0.05)


def cgroup_procs(cgroup: Path) -> list[int]:
    """Every process left anywhere in a cgroup tree."""
    found = []
    for procs in [cgroup / "cgroup.procs", *cgroup.rglob("*/cgroup.procs")]:
        with contextlib.suppress(FileNotFoundError):
            found += [int(pid) for pid in procs.read_text().split()]
    return found


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), or None if it is gone:
    with the PID, it names one process, never a later one given the same PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def claim(run_dir: Path) -> None:
    """Mark `run_dir` as this process's (see sweep_stale_runs)."""
    (run_dir / "owner").write_text(f"{os.getpid()} {process_start(os.getpid())}\n")


def sweep_stale_runs(root: Path) -> None:
    """Remove what runs left whose test process died without its teardown (their
    systemd died with it, through --pdeathsig); runs still owned are left alone."""
    cgroups = cgroup2_root()
    for run_dir in root.glob("run-*"):
        try:
            pid, started = (run_dir / "owner").read_text().split()
        except (FileNotFoundError, ValueError):
            continue  # being set up right now
        if process_start(int(pid)) == started:
            continue
        cgroup = cgroups / f"secretd-systest-{run_dir.name}" if cgroups else None
        if cgroup is not None and cgroup.exists():
            if cgroup_procs(cgroup):
                continue  # something still runs there: not ours to judge
            remove_cgroup(cgroup)
        shutil.rmtree(run_dir, ignore_errors=True)


def namespaces_work() -> str | None:
    """None when this host lets us make the namespaces, else why not."""
    if os.geteuid() != 0:
        return "booting systemd in namespaces needs root"
    for tool in ("unshare", "nsenter", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux) is not installed"
    if not SYSTEMD.exists():
        return f"{SYSTEMD} is not installed"
    if cgroup2_root() is None:
        return "no writable cgroup2 hierarchy"
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--cgroup", "--", "/bin/true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return f"namespaces are not permitted here: {probe.stderr.strip()}"
    return None

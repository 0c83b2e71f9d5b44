"""The project's units, a store and a config on a booted systemd: what every
real-systemd test starts from.

The unit files are packaging/systemd's own. Only two strings change: the
program (`/usr/bin/secretd` becomes the test venv's) and the config path.
One drop-in adds the test paths (`ReadWritePaths=` for the template test);
nothing removes or relaxes a hardening line. Stub targets stand in for the
distribution's (units have default dependencies on them).

Test state lives in the run directory under install.ROOT (outside /tmp and
/var/tmp, which PrivateTmp= hides from the agent): the store and its key
(owned by `secretd`), the config, the read-write directory for templates,
and what consumer units report (`out/`).
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.system.install import REPO
from tests.system.machine import Machine, MachineError

PACKAGED = REPO / "packaging/systemd"
PROGRAM = "/usr/bin/secretd"
PACKAGED_CONFIG = "/etc/secretd/secretd.toml"
STUB_TARGETS = (
    "sysinit",
    "basic",
    "sockets",
    "paths",
    "timers",
    "slices",
    "local-fs",
    "network",
    "network-online",
    "multi-user",
    "default",
    "shutdown",
)
SOCKET = "/run/secretd/secretd.sock"
CREDENTIALS_SOCKET = "/run/secretd/credentials.sock"
SERVICE = "secretd.service"
SOCKETS = ("secretd.socket", "secretd-credentials.socket")
AS_SECRETD = ["setpriv", "--reuid=secretd", "--regid=secretd", "--init-groups", "--"]
ACTIVE_WITHIN = 60.0


def install_units(unit_dir: Path, *, venv: Path, config: Path, rw_dir: Path) -> None:
    """Stub targets, the packaged units (program and config path rewritten), the
    test-paths drop-in."""
    unit_dir.mkdir()
    for target in STUB_TARGETS:
        (unit_dir / f"{target}.target").write_text(
            f"[Unit]\nDescription=stub {target}.target for the secretd system tests\n"
        )
    for packaged in sorted(PACKAGED.iterdir()):
        text = packaged.read_text()
        if packaged.name == SERVICE:
            for old, new in ((PROGRAM, f"{venv}/bin/secretd"), (PACKAGED_CONFIG, str(config))):
                if text.count(old) != 2:  # ExecStartPre= and ExecStart=
                    raise MachineError(f"{packaged}: expected {old} twice; update the tier")
                text = text.replace(old, new)
        (unit_dir / packaged.name).write_text(text)
    dropins = unit_dir / f"{SERVICE}.d"
    dropins.mkdir()
    (dropins / "10-test-paths.conf").write_text(f"[Service]\nReadWritePaths={rw_dir}\n")


# Values the env-file test reads back through EnvironmentFile= (fields of env/odd).
ODD_VALUES = {
    "QUOTES": "it's \"double\" and 'single'",
    "DOLLAR": "$HOME ${PATH} $$ $1 \\$ %h",
    "BACKTICKS": "`id` $(id)",
    "BACKSLASHES": "a\\b\\\\c\\n ends in one\\",
    "HASH": "#not a comment # nor this",
    "SPACES": "  two before, two after  ",
    "NEWLINES": "line one\nline two\n\nlast line\n",
    "MIXED": "=\t'\"`$\\#;& \u00fcn\u00efc\u00f8d\u00e9 \u2713\r\nend",
}
# What the tier serves from the start: name -> value (tests add versions).
SEEDS = {
    "app/db": json.dumps({"password": 'pw "q" $x \\ \u00fc', "user": "app"}).encode(),
    "app/api": b"api-\x00\xff\n\tkey ",  # not UTF-8: credentials are bytes
    "env/odd": json.dumps(ODD_VALUES).encode(),
    "app/rotating": b"version-1",
}


def base_config(run_dir: Path, extra: str = "") -> str:
    """The agent's config: the run's store, root may read everything, the
    credentials and templates the tests use (the env and .path pair as in
    docs/operating.md)."""
    odd = ", ".join(f'{var} = "env/odd#{var}"' for var in ODD_VALUES)
    return f"""\
[agent]
socket = "{SOCKET}"
log_format = "json"
audit_log = "/var/log/secretd/audit.jsonl"

[backends.local]
type = "file"
path = "{run_dir}/store"
key_file = "{run_dir}/store.key"

[[allow]]
secrets = ["**"]
uids = [0]

[[credential]]
unit = "cred-*.service"
id = "db-password"
secret = "app/db"
field = "password"

[[credential]]
unit = "cred-*.service"
id = "api-key"
secret = "app/api"

[[template]]
destination = "/run/secretd/odd.env"
format = "env"
vars = {{ {odd} }}

[[template]]
destination = "/run/secretd/app.env"
format = "env"
vars = {{ ROTATING = "app/rotating" }}
command = ["/usr/bin/touch", "/run/secretd/app.changed"]

[[template]]
destination = "{run_dir}/rw/app.conf"
contents = "password={{{{ secret('app/db', field='password') }}}}\\n"
mode = "0640"
{extra}"""


# Consumer programs, run by the consumer units with Debian's /usr/bin/python3.
COPY_CREDENTIALS = """\
import os, sys
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for cred in sys.argv[2:]:
    with open(os.path.join(os.environ["CREDENTIALS_DIRECTORY"], cred), "rb") as f:
        data = f.read()
    with open(os.path.join(out, cred), "wb") as f:
        f.write(data)
"""
DUMP_ENVIRONMENT = """\
import json, os, signal, sys
stay = sys.argv[1] == "--stay"
out, names = sys.argv[1 + stay], sys.argv[2 + stay:]
found = {n: os.environb[n.encode()].hex() for n in names if n.encode() in os.environb}
with open(out + ".tmp", "w") as f:
    json.dump({"pid": os.getpid(), "env": found}, f)
os.rename(out + ".tmp", out)
while stay:
    signal.pause()
"""


@dataclass
class Rig:
    """A booted machine with secretd's units installed and a store to serve."""

    machine: Machine
    run_dir: Path
    venv: Path
    dirty: bool = True  # the agent must be (re)started from the base config

    @property
    def config(self) -> Path:
        return self.run_dir / "etc/secretd.toml"

    @property
    def out(self) -> Path:
        return self.run_dir / "out"

    def secretd_cli(self, *args: str, stdin: bytes | None = None) -> str:
        """The installed `secretd` CLI on the host, as the secretd user (docs/operating.md)."""
        done = subprocess.run(
            [*AS_SECRETD, f"{self.venv}/bin/secretd", *args],
            input=stdin,
            capture_output=True,
            timeout=60,
            check=False,
            cwd="/",
        )
        if done.returncode != 0:
            raise MachineError(f"secretd {args[0]}: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def put(self, name: str, value: bytes) -> str:
        """`secretd store put` (as secretd); the new version id."""
        out = self.secretd_cli("store", "put", str(self.run_dir / "store"), name, stdin=value)
        return out.strip().split()[-1]

    def write_config(self, text: str) -> None:
        self.config.write_text(text)
        self.config.chmod(0o644)

    def add_unit(self, name: str, text: str) -> None:
        """A unit in the machine's unit directory, loaded (daemon-reload)."""
        (self.machine.unit_dir / name).write_text(text)
        self.machine.systemctl("daemon-reload")

    def get(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`secretd get NAME` inside the machine, as root, on the activated socket."""
        return self.machine.run(
            f"{self.venv}/bin/secretd", "get", "--socket", SOCKET, name, *args, check=check
        )

    def serving(self) -> None:
        """The agent active on the base config (restarted when a test changed things)."""
        if self.dirty:
            self.write_config(base_config(self.run_dir))
            self.machine.systemctl("start", *SOCKETS)
            self.machine.systemctl("reset-failed", SERVICE, check=False)
            self.machine.systemctl("restart", SERVICE)
            self.dirty = False
        self.machine.systemctl("start", SERVICE)
        self.machine.wait_state(SERVICE, "active", ACTIVE_WITHIN)

    def main_pid(self) -> int:
        return int(self.machine.show(SERVICE, "MainPID")["MainPID"])

    def agent_events(self, event: str) -> list[dict[str, object]]:
        """The agent's JSON log lines named `event` (they reach systemd's console)."""
        found = []
        for line in self.machine.log("console", tail=10**8).splitlines():
            if line.startswith("{") and f'"{event}"' in line:
                entry = json.loads(line)
                if entry.get("event") == event:
                    found.append(entry)
        return found

    def agent_event(self, event: str, since: datetime, within: float = 30) -> dict[str, object]:
        """The first `event` logged after `since` (the console is copied with a lag)."""
        found: list[dict[str, object]] = []

        def logged() -> bool:
            found[:] = [e for e in self.agent_events(event) if when(e["timestamp"]) > since]
            return bool(found)

        eventually(logged, within, f"the agent logs {event} after {since}")
        return found[0]

    def console_says(self, text: str, within: float = 30) -> None:
        """Wait for `text` in systemd's console (copied there with a lag)."""
        eventually(lambda: text in self.machine.log("console", tail=10**8), within, repr(text))

    def status_text(self, wanted: str, within: float = 30) -> None:
        """Wait for the agent's STATUS= line (as systemd shows it) to be `wanted`."""
        eventually(
            lambda: self.machine.show(SERVICE, "StatusText")["StatusText"] == wanted,
            within,
            f"StatusText {wanted!r}",
        )

    def exists(self, path: str) -> bool:
        """Whether `path` exists inside the machine."""
        return self.machine.run("test", "-e", path, check=False).returncode == 0


def when(value: object) -> datetime:
    """A systemd `--timestamp=us+utc` or a structlog ISO timestamp, as a datetime (UTC)."""
    text = str(value)
    if text.endswith(" UTC"):
        return datetime.strptime(text, "%a %Y-%m-%d %H:%M:%S.%f UTC")
    return datetime.fromisoformat(text.removesuffix("Z"))


def eventually(condition: Callable[[], object], within: float, what: str) -> None:
    """Poll `condition` until it is true; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise MachineError(f"not within {within}s: {what}")
        time.sleep(0.1)


def prepare_run(run_dir: Path, venv: Path) -> None:
    """Config dir, store (created with the CLI, owned by secretd), rw and out dirs."""
    secretd = pwd.getpwnam("secretd")
    run_dir.chmod(0o755)
    for name in ("etc", "out", "bin", "rw"):
        (run_dir / name).mkdir()
        (run_dir / name).chmod(0o755)  # whatever our umask: the secretd user reads etc/
    (run_dir / "bin/copy-credentials.py").write_text(COPY_CREDENTIALS)
    (run_dir / "bin/dump-environment.py").write_text(DUMP_ENVIRONMENT)
    os.chown(run_dir / "rw", secretd.pw_uid, secretd.pw_gid)
    subprocess.run(
        [
            f"{venv}/bin/secretd",
            "store",
            "init",
            str(run_dir / "store"),
            "--key",
            str(run_dir / "store.key"),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    for path in [run_dir / "store.key", run_dir / "store", *(run_dir / "store").rglob("*")]:
        os.chown(path, secretd.pw_uid, secretd.pw_gid)

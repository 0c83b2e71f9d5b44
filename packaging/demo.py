"""The quick start (`make demo`): a demo store, secret and config under ./demo, then
the agent in the foreground.

Run from the repository root. The first run creates, once:

    demo/store/ + demo/store.key   an encrypted file store (`secretd store init`)
    demo/hello                     the secret `demo/hello`, a JSON object (`secretd store put`)
    demo/secretd.toml              socket ./demo/secretd.sock, audit log, an allow
                                   rule for the current uid, an env-file template

Later runs reuse them. It then prints how to read the secret and replaces
itself with `secretd agent -c demo/secretd.toml` (Ctrl-C or SIGTERM stops it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

DEMO_NAME = "demo/hello"
DEMO_VALUE = b'{"greeting": "hello from secretd", "user": "demo", "password": "change-me"}\n'
SOCKET_PATH_MAX = 107


def secretd_executable() -> str:
    beside = Path(sys.executable).parent / "secretd"
    if beside.exists():
        return str(beside)
    found = shutil.which("secretd")
    if found is None:
        sys.exit("demo: the secretd executable was not found; run `make dev` first")
    return found


def config_for(demo: Path) -> str:
    return f"""# The quick-start config (packaging/demo.py). Paths are relative to this file.
[agent]
socket = "secretd.sock"
state_dir = "state"
socket_mode = "0600"
audit_log = "{demo / "audit.jsonl"}"

[backends.local]
type = "file"
path = "store"
key_file = "store.key"

[[secret]]
name = "{DEMO_NAME}"

[[allow]]
secrets = ["demo/**"]
uids = [{os.getuid()}]

[[template]]
format = "env"
vars = {{ DEMO_GREETING = "{DEMO_NAME}#greeting", DEMO_USER = "{DEMO_NAME}#user" }}
destination = "rendered/hello.env"
"""


def create_once(demo: Path, secretd: str) -> None:
    config = demo / "secretd.toml"
    if config.exists():
        print(f"demo: reusing {demo}/ (delete it to start afresh)")
        return
    demo.mkdir(mode=0o700, exist_ok=True)
    (demo / "rendered").mkdir(mode=0o700, exist_ok=True)
    run(secretd, "store", "init", str(demo / "store"), "--key", str(demo / "store.key"))
    run(secretd, "store", "put", str(demo / "store"), DEMO_NAME, stdin=DEMO_VALUE)
    config.write_text(config_for(demo))
    config.chmod(0o600)
    print(f"demo: created {demo}/ with a store, the secret {DEMO_NAME!r} and a config")


def run(*argv: str, stdin: bytes | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        sys.exit(f"demo: {' '.join(argv[1:3])} failed: {done.stderr.decode().strip()}")


def main() -> None:
    demo = Path.cwd() / "demo"
    sock = demo / "secretd.sock"
    if len(os.fsencode(sock)) > SOCKET_PATH_MAX:
        sys.exit(f"demo: {sock} is too long for a Unix socket; run from a shorter path")
    secretd = secretd_executable()
    create_once(demo, secretd)
    print(
        f"""
The agent starts now, in the foreground (Ctrl-C or SIGTERM stops it).
In another terminal, read the secret:

  {secretd} get {DEMO_NAME} --socket ./demo/secretd.sock
  {secretd} get {DEMO_NAME} --field greeting --socket ./demo/secretd.sock
  curl --unix-socket ./demo/secretd.sock http://localhost/v1/secrets/{DEMO_NAME}
  curl --unix-socket ./demo/secretd.sock http://localhost/v1/health

Rotate it and watch the API (and ./demo/rendered/hello.env) follow at once:

  echo '{{"greeting": "rotated", "user": "demo"}}' | {secretd} store put demo/store {DEMO_NAME}
""",
        flush=True,
    )
    os.execv(secretd, [secretd, "agent", "-c", str(demo / "secretd.toml")])  # noqa: S606


if __name__ == "__main__":
    main()

"""`secretd get`, `secretd status` and `secretd exec`: the agent's clients.

They talk to a running agent through the `secretd_client` SDK over the Unix
socket from `--socket`, else `$SECRETD_SOCKET`, else the default path(s) (the
SDK tries `$XDG_RUNTIME_DIR/secretd.sock`, then `/run/secretd/secretd.sock`).
Exit status: 0 success, 1 runtime failure (agent unreachable, forbidden, not
found, backend down), 2 usage error (bad name, bad option). Errors are one
line on stderr; values go only to stdout (`get`) or the child's environment
(`exec`).

Only argparse is imported to build the parser; the SDK and the exec
supervisor are imported when a command runs, and nothing here loads the
config schema (pydantic), so `secretd get` starts fast
(tests/integration/test_cli_habits.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from secretd.cli.options import socket_option
from secretd.durable import write_all
from secretd.durations import parse_duration
from secretd.errors import UsageError

if TYPE_CHECKING:
    from secretd.cli.client_exec import ExecOptions

# Said after a denial (the agent's message names who it saw): what to change.
FORBIDDEN_HINT = (
    "to allow it, add an [[allow]] rule for this name and caller to the agent's config "
    "and reload the agent (docs/troubleshooting.md)"
)
# The CLI talks to its own host's agent, whatever that agent's limits: room for
# the largest value any agent can serve (max_secret_bytes up to 64 MiB, base64).
CLI_MAX_ANSWER = 96 * 1024 * 1024


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_get(sub)
    _register_status(sub)
    _register_exec(sub)


CLIENT_EPILOG = (
    "exit status: 0 ok, 1 failure (agent unreachable, forbidden, not found, backend down), "
    "2 bad command line or name. environment: SECRETD_SOCKET, XDG_RUNTIME_DIR"
)


def _register_get(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    get = sub.add_parser(
        "get",
        help="read one secret from the running agent",
        description="Print one secret's value exactly as stored (no newline is added), "
        "or the API's JSON with --json.",
        epilog=CLIENT_EPILOG,
    )
    get.add_argument("name", metavar="NAME", help="the secret's name")
    get.add_argument("--field", metavar="F", help="one top-level key of a JSON-object value")
    which = get.add_mutually_exclusive_group()
    which.add_argument("--stage", metavar="S", help="current (default), previous, pending, ...")
    which.add_argument("--version", metavar="V", help="a version id")
    get.add_argument("--refresh", action="store_true", help="ask the backend, not the cache")
    get.add_argument("--json", action="store_true", help="print the API's JSON document")
    socket_option(get)
    get.set_defaults(run=run_get)


def _register_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser(
        "status",
        help="backends, cached secrets, templates and last errors (never values)",
        description="Show the agent's health: backends, the secrets you may read with their "
        "versions, age and staleness, templates and last errors. Exit 0 when the agent "
        "is ok, 1 when it is degraded, starting or unreachable.",
        epilog="exit status: 0 the agent is ok, 1 degraded, starting or unreachable. "
        "environment: SECRETD_SOCKET, XDG_RUNTIME_DIR",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    socket_option(status)
    status.set_defaults(run=run_status)


def _register_exec(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "exec",
        help="run a command with secrets in its environment",
        usage="secretd exec [--socket PATH] [--restart | --signal SIG] [--grace DURATION]\n"
        "                    --env VAR=NAME[#FIELD] [--env ...] -- CMD [ARG...]",
        description="Run CMD with secrets from the agent in its environment (never in argv). "
        "Signals are forwarded; the exit status is the command's (128+N for signal N). "
        "With --restart or --signal, a rotation of a used value restarts the command "
        "or sends it SIG.",
        epilog="exit status: the command's own (128+N when signal N ended it); 1 when "
        "secrets cannot be fetched, 2 bad command line. environment: SECRETD_SOCKET, "
        "XDG_RUNTIME_DIR (the command gets the caller's environment plus the --env variables)",
    )
    socket_option(run)
    run.add_argument(
        "--env",
        action="append",
        required=True,
        metavar="VAR=NAME[#FIELD]",
        help="set VAR to secret NAME (or one FIELD of it); repeatable",
    )
    on_change = run.add_mutually_exclusive_group()
    on_change.add_argument("--restart", action="store_true", help="restart CMD on rotation")
    on_change.add_argument("--signal", metavar="SIG", help="send SIG (e.g. HUP) on rotation")
    run.add_argument(
        "--grace",
        default="10s",
        metavar="DURATION",
        help="on restart and on stop, wait this long after SIGTERM before SIGKILL "
        "to the command's process group (default 10s)",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]")
    run.set_defaults(run=run_exec)


@contextmanager
def _client_errors(what: str, args: argparse.Namespace) -> Iterator[list[int]]:
    """Turn SDK errors into stderr lines (a traceback too with --debug); the
    yielded cell receives the exit code."""
    from secretd_client import Forbidden, InvalidName, InvalidRequest, SecretdClientError

    outcome = [0]
    try:
        yield outcome
    except SecretdClientError as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        hint = f"; {FORBIDDEN_HINT}" if isinstance(exc, Forbidden) else ""
        print(f"secretd: {what}: {exc}{hint}", file=sys.stderr)
        outcome[0] = 2 if isinstance(exc, InvalidName | InvalidRequest) else 1


def run_get(args: argparse.Namespace) -> int:
    from secretd_client import Client

    with (
        _client_errors("get", args) as outcome,
        Client(args.socket, max_response_bytes=CLI_MAX_ANSWER) as client,
    ):
        secret = client.get(
            args.name,
            field=args.field,
            stage=args.stage,
            version=args.version,
            refresh=args.refresh,
        )
        if secret.stale and not args.json:
            print(
                f"secretd: get: warning: {args.name} is a stale cached value "
                "(the agent could not refresh it)",
                file=sys.stderr,
            )
        if args.json:
            data = (json.dumps(secret.to_api_dict(), ensure_ascii=False) + "\n").encode()
        else:
            data = secret.as_bytes()
        outcome[0] = _write_stdout(data)
    return outcome[0]


def _write_stdout(data: bytes) -> int:
    """Write to stdout; a reader that went away (`| head -c1`) is exit 1, not a traceback."""
    try:
        sys.stdout.flush()
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests capturing stdout)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    try:
        # os.write, not the buffered writer: it reports a reader that left mid-value.
        write_all(fd, data)
    except BrokenPipeError:
        # Keep the interpreter's final flush from complaining about the dead pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
        return 1
    return 0


def run_status(args: argparse.Namespace) -> int:
    from secretd.cli.client_status import render_rotations, render_status, status_document
    from secretd.cli.rotate_cmds import fetch_rotations
    from secretd.cli.usage_cmds import fetch_usage, reads_by_name
    from secretd_client import Client, Forbidden, SecretdClientError

    with (
        _client_errors("status", args) as outcome,
        Client(args.socket, max_response_bytes=CLI_MAX_ANSWER) as client,
    ):
        health = client.health()
        secrets, list_error = None, None
        try:
            secrets = client.list()
        except (Forbidden, SecretdClientError) as exc:
            list_error = str(exc)
        rotations = fetch_rotations(client.socket)
        if args.json:
            document = status_document(client.socket, health, secrets, list_error)
            document["rotations"], document["rotations_error"] = rotations
            usage, document["usage_error"] = fetch_usage(client.socket)
            reads = reads_by_name(usage)
            for row in document["secrets"] or []:
                row.update(reads.get(row["name"], {"last_read": None, "reads": 0}))
            print(json.dumps(document, indent=2, ensure_ascii=False))
        else:
            text = render_status(client.socket, health, secrets, list_error)
            sys.stdout.write(text + render_rotations(*rotations))
        outcome[0] = 0 if health.ok else 1
    return outcome[0]


def run_exec(args: argparse.Namespace) -> int:
    import asyncio

    from secretd.cli.client_exec import ExecOptions, make_non_dumpable, parse_signal, parse_specs

    argv = list(args.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError("exec: no command given (put it after --)")
    try:
        grace = parse_duration(args.grace)
    except ValueError as exc:
        raise UsageError(f"exec: --grace: {exc}") from None
    options = ExecOptions(
        argv=argv,
        specs=parse_specs(args.env),
        restart=args.restart,
        signal=parse_signal(args.signal) if args.signal else None,
        grace=grace,
    )
    make_non_dumpable()
    with _client_errors("exec", args) as outcome:
        outcome[0] = asyncio.run(_exec(args.socket, options))
    return outcome[0]


async def _exec(socket: str | None, options: ExecOptions) -> int:
    from secretd.cli.client_exec import Supervisor, stderr_say
    from secretd_client import AsyncClient

    async with AsyncClient(socket, max_response_bytes=CLI_MAX_ANSWER) as client:
        return await Supervisor(client, options, stderr_say("secretd: exec: ")).run()

"""`secretd rotate NAME`: run one rotation now (docs/rotation.md).

Through the running agent when there is one (`POST /v1/rotation/NAME` on its
socket: `--socket`, else the config's `agent.socket` with `-c`, else
`$SECRETD_SOCKET` / the default path); otherwise, given `-c CONFIG`, directly
against the configured store or backends in this process (`--no-agent`
forces that). Either way the secret's rotation lock makes sure only one
rotation of it runs at a time. Prints the outcome; never a value.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from secretd.errors import SecretdError, UsageError
from secretd.model import SecretName

if TYPE_CHECKING:  # httpx loads when a command talks to the agent (`--help` stays fast)
    import httpx

AGENT_TIMEOUT = 3600.0  # a rotation is bounded by its entry's `timeout`; this only backs it up


class AgentError(SecretdError):
    """The agent answered with an error (its code and message, re-told)."""


class NoAgent(Exception):
    """Nothing listens on the socket."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rotate = sub.add_parser(
        "rotate",
        help="rotate one secret now (through the agent, or directly with -c)",
        description="Run one rotation of NAME now: create a new value, set it on its "
        "target, test it, make it current. Through the running agent; with -c CONFIG "
        "and no agent running, directly against the configured backends.",
    )
    rotate.add_argument("name", metavar="NAME")
    rotate.add_argument("-c", "--config", type=Path, metavar="FILE", help="the agent's config")
    rotate.add_argument("--socket", metavar="PATH", help="the agent's socket")
    rotate.add_argument(
        "--fresh", action="store_true", help="drop a pending version left by an earlier run"
    )
    rotate.add_argument("--no-agent", action="store_true", help="rotate in this process (needs -c)")
    rotate.add_argument("--json", action="store_true", help="print the outcome as JSON")
    rotate.set_defaults(run=run_rotate)


def run_rotate(args: argparse.Namespace) -> int:
    name = SecretName(args.name)
    config = None
    if args.config is not None:
        from secretd.config import load_config

        config = load_config(args.config)
    if args.no_agent and config is None:
        raise UsageError("rotate: --no-agent needs -c CONFIG")
    outcome: dict[str, Any] | None = None
    if not args.no_agent:
        socket = _socket(args, config)
        try:
            outcome = through_agent(socket, name, fresh=args.fresh)
        except NoAgent:
            if config is None:
                raise SecretdError(
                    f"rotate: no agent answers at {socket}; give -c CONFIG to rotate without one"
                ) from None
    if outcome is None:
        assert config is not None
        outcome = _direct(config, name, fresh=args.fresh)
    _print(outcome, as_json=args.json)
    return 0


def _socket(args: argparse.Namespace, config: Any) -> str:
    if args.socket:
        return str(args.socket)
    if config is not None and not os.environ.get("SECRETD_SOCKET"):
        return str(config.agent.socket)
    from secretd_client import resolve_socket

    return resolve_socket(None)


def through_agent(socket: str, name: SecretName, *, fresh: bool) -> dict[str, Any]:
    """POST /v1/rotation/NAME; NoAgent when nobody listens."""
    if not Path(socket).exists():
        raise NoAgent(socket)
    import httpx

    from secretd_client._transport import unix_transport

    params = {"fresh": "true"} if fresh else {}
    timeout = httpx.Timeout(AGENT_TIMEOUT, connect=5.0)
    with httpx.Client(
        transport=unix_transport(socket), base_url="http://secretd", timeout=timeout
    ) as client:
        try:
            response = client.post("/v1/rotation/" + quote(name, safe="/+=@"), params=params)
        except httpx.ConnectError:
            raise NoAgent(socket) from None
        except httpx.HTTPError as exc:
            raise SecretdError(f"rotate: the agent at {socket}: {type(exc).__name__}") from None
    return _answer(response, socket)


def _answer(response: httpx.Response, socket: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200 and isinstance(body, dict):
        return body
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    text = str(message) if message else f"answered {response.status_code}"
    raise AgentError(f"rotate: {''.join(c if c.isprintable() else ' ' for c in text)[:300]}")


def _direct(config: Any, name: SecretName, *, fresh: bool) -> dict[str, Any]:
    import asyncio

    from secretd.logs import configure_logging
    from secretd.rotation.direct import rotate_directly

    # Logs to stderr (stdout carries the outcome), at most warnings: the
    # outcome line says what happened, the audit log has every step.
    configure_logging("warning", config.agent.log_format)
    outcome = asyncio.run(rotate_directly(config, name, fresh=fresh))
    return {
        "name": outcome.name,
        "rotated": outcome.rotated,
        "version_id": outcome.version_id,
        "steps": [step.value for step in outcome.steps],
        "resumed": outcome.resumed,
        "agent": False,
    }


def _print(outcome: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome))
        return
    steps = ", ".join(str(s) for s in outcome.get("steps") or []) or "none"
    resumed = " (resumed an earlier run)" if outcome.get("resumed") else ""
    sys.stdout.write(
        f"secret {outcome.get('name')} rotated{resumed}: version "
        f"{outcome.get('version_id')} is current (steps run: {steps})\n"
    )


def fetch_rotations(socket: str) -> tuple[list[dict[str, Any]] | None, str | None]:
    """`GET /v1/rotation` for `secretd status`: (rows, None) or (None, why not)."""
    document, error = get_from_agent(socket, "/v1/rotation", timeout=10.0)
    if document is None:
        return None, error
    rows = document.get("rotations")
    return (rows, None) if isinstance(rows, list) else (None, "malformed answer")


def get_from_agent(
    socket: str, path: str, *, timeout: float
) -> tuple[dict[str, Any] | None, str | None]:
    """`GET path` from the agent: (its JSON document, None) or (None, why not)."""
    import httpx  # here, not at the top: `secretd get` must not pay for it

    from secretd_client._transport import unix_transport

    try:
        with httpx.Client(
            transport=unix_transport(socket), base_url="http://secretd", timeout=timeout
        ) as client:
            response = client.get(path)
    except httpx.HTTPError as exc:
        return None, f"cannot ask the agent at {socket} ({type(exc).__name__})"
    try:
        return _answer(response, socket), None
    except AgentError as exc:
        return None, exc.message.removeprefix("rotate: ")

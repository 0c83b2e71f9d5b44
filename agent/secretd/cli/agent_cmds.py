"""`secretd agent -c FILE` (run the daemon in the foreground) and `secretd check -c FILE`.

`check` validates everything that can be validated without asking a remote
backend, by building what the agent would build (secretd.graph.check_config):
the config itself, every backend as it would be opened (file stores with their
key files and records, Vault credential and CA files, the AWS client set-up),
the TCP token file, an existing audit log, the access rules (users and groups
must exist) and every template (compiled, owners resolved). Run as root it also
accepts files owned by the service user (`secretd`), so the installed files can
be checked before the service starts. It prints what the agent would serve and
render, or every problem found, and exits 2 on any problem.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from secretd.config import (
    AllowRule,
    AwsBackendConfig,
    Config,
    FileBackendConfig,
    VaultBackendConfig,
    load_config,
)
from secretd.fileperm import trusting_service_user
from secretd.logs import configure_logging


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser(
        "agent",
        help="run the agent in the foreground (logs to stderr)",
        description="Run the secretd agent in the foreground, systemd style: logs go to "
        "stderr, SIGTERM/SIGINT stop it cleanly within 5 s.",
    )
    agent.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")
    agent.set_defaults(run=run_agent_command)
    check = sub.add_parser(
        "check",
        help="validate a config, its key files and templates; exit 2 on any error",
        description="Validate the config, key files, credential files, access rules and "
        "templates without contacting remote backends, and print what would be served.",
    )
    check.add_argument("-c", "--config", type=Path, required=True, metavar="FILE")
    check.set_defaults(run=run_check_command)


def run_agent_command(args: argparse.Namespace) -> int:
    import uvloop  # imported here: `secretd --help` stays fast

    from secretd.app import run_agent

    config = load_config(args.config)
    configure_logging(config.agent.log_level, config.agent.log_format)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_agent(config, config_path=args.config))
    return 0


def run_check_command(args: argparse.Namespace) -> int:
    # Run as root before the service starts, check accepts the service user's files.
    with trusting_service_user():
        config = load_config(args.config)
        configure_logging("warning")
        problems = asyncio.run(find_problems(config))
    if problems:
        for problem in problems:
            print(f"secretd: {problem}", file=sys.stderr)
        return 2
    print(f"{args.config}: ok")
    for line in summary(config):
        print(line)
    return 0


async def find_problems(config: Config) -> list[str]:
    """Every problem found, each naming the file or key at fault."""
    from secretd.graph import check_config

    return await check_config(config)


def summary(config: Config) -> list[str]:
    """What the agent would serve and render: never a value."""
    agent = config.agent
    group = f", group {agent.socket_group}" if agent.socket_group else ""
    lines = [f"socket     {agent.socket} (mode {agent.socket_mode:04o}{group})"]
    lines.append(f"tcp        {config.tcp.listen if config.tcp else 'off'}")
    for name, backend in config.backends.items():
        lines.append(
            f"backend    {name}: {backend.type}, mount {backend.mount!r}, {_where(backend)}"
        )
    declared = ", ".join(decl.name for decl in config.secret) or "none"
    lines.append(f"secrets    {len(config.secret)} declared: {declared}")
    persisted = config.cache.persist_dir
    lines.append(f"cache      {'persisted in ' + str(persisted) if persisted else 'memory only'}")
    lines.append(f"rules      {len(config.allow)} allow rule(s)")
    for rule in config.allow:
        lines.append(f"  allow    {', '.join(rule.secrets)} to {_subjects(rule)}")
    lines.append(f"templates  {len(config.template)}")
    for template in config.template:
        lines.append(f"  render   {template.destination} ({template.format}, {template.mode:04o})")
    lines.append(f"credentials {len(config.credential)}")
    lines.append(f"rotations  {len(config.rotation)} (state in {agent.state_dir})")
    for entry in config.rotation:
        lines.append(f"  rotate   {entry.secret} ({entry.rotator}, every {_days(entry.every)})")
    lines.append(f"audit      {agent.audit_log or 'off'}")
    return lines


def _days(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _where(backend: FileBackendConfig | VaultBackendConfig | AwsBackendConfig) -> str:
    if isinstance(backend, FileBackendConfig):
        return str(backend.path)
    if isinstance(backend, VaultBackendConfig):
        return ", then ".join(backend.addresses)
    regions = ", then ".join(r or "default" for r in backend.region_list)
    endpoints = backend.endpoint_urls or ((backend.endpoint_url,) if backend.endpoint_url else ())
    where = f"region {regions}"
    return where + (f", endpoint {', '.join(endpoints)}" if endpoints else "")


def _subjects(rule: AllowRule) -> str:
    parts = [
        f"{key} {', '.join(str(v) for v in values)}"
        for key, values in (
            ("uids", rule.uids),
            ("gids", rule.gids),
            ("users", rule.users),
            ("groups", rule.groups),
            ("units", rule.units),
        )
        if values
    ]
    if rule.tcp:
        parts.append("tcp")
    return "; ".join(parts)

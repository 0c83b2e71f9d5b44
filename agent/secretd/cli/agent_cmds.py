"""`secretd agent` (run the daemon in the foreground) and `secretd check`.

Both read `-c FILE`, else `$SECRETD_CONFIG`, else /etc/secretd/secretd.toml.

`check` validates everything that can be validated without asking a remote
backend, by building what the agent would build (secretd.preflight): the
config itself (every problem at once, each at its file:line:column), every
backend as it would be opened (file stores with their key files and records,
Vault credential and CA files, the AWS client set-up), the TCP token file, the
audit log, the access rules (users and groups must exist), every template
(compiled, owners resolved, destination directories by the writer's rules) and
every secret read by name (in templates and credentials: on a file store the
secret, stage and field must exist; a declared one missing is a warning;
remote ones are not asked). Run
as root it also accepts files owned by the service user (`secretd`), so the
installed files can be checked before the service starts. It prints what the
agent would serve and render, or every problem found, and exits 2 on any
problem; a config without any `[[allow]]` rule is a warning.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from secretd.cli.options import config_option, config_path
from secretd.durations import format_duration

if TYPE_CHECKING:  # the schema (pydantic) loads only when a command needs it
    from secretd.config import (
        AllowRule,
        AwsBackendConfig,
        Config,
        FileBackendConfig,
        VaultBackendConfig,
    )
    from secretd.preflight import Findings

EXIT_STATUS = "exit status: 0 ok, 1 runtime failure, 2 bad command line or config"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser(
        "agent",
        help="run the agent in the foreground (logs to stderr)",
        description="Run the secretd agent in the foreground, systemd style: logs go to "
        "stderr, SIGHUP reloads the config, SIGUSR1 reopens the audit log, SIGTERM/SIGINT "
        "stop it cleanly within 5 s.",
        epilog=f"{EXIT_STATUS}. environment: SECRETD_CONFIG, NOTIFY_SOCKET, LISTEN_FDS, "
        "WATCHDOG_USEC (systemd)",
    )
    config_option(agent)
    agent.set_defaults(run=run_agent_command)
    check = sub.add_parser(
        "check",
        help="validate a config, its key files and templates; exit 2 on any error",
        description="Validate the config, key files, credential files, access rules, "
        "templates, their destinations and the secrets they name (on file stores) without "
        "contacting remote backends, and print what would be served.",
        epilog="exit status: 0 ok (warnings are printed), 2 any problem. "
        "environment: SECRETD_CONFIG",
    )
    config_option(check)
    check.set_defaults(run=run_check_command)


def run_agent_command(args: argparse.Namespace) -> int:
    import asyncio

    import uvloop  # imported here: `secretd --help` stays fast

    from secretd.app import run_agent
    from secretd.config import load_config
    from secretd.logs import configure_logging

    path = config_path(args)
    config = load_config(path)
    configure_logging(config.agent.log_level, config.agent.log_format)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_agent(config, config_path=path))
    return 0


def run_check_command(args: argparse.Namespace) -> int:
    import asyncio

    from secretd.config import load_config
    from secretd.fileperm import trusting_service_user
    from secretd.logs import configure_logging

    path = config_path(args)
    # Run as root before the service starts, check accepts the service user's files.
    with trusting_service_user():
        config = load_config(path)
        configure_logging("warning")
        findings = asyncio.run(find_problems(config))
    for warning in findings.warnings:
        print(f"secretd: warning: {warning}", file=sys.stderr)
    if findings.problems:
        for problem in findings.problems:
            print(f"secretd: {problem}", file=sys.stderr)
        return 2
    print(f"{path}: ok")
    for line in summary(config):
        print(line)
    for note in findings.notes:
        print(f"note       {note}")
    return 0


async def find_problems(config: Config) -> Findings:
    """Every problem found (each naming the file or key at fault), warnings and notes."""
    from secretd.preflight import check_config

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
        every = format_duration(entry.every)
        lines.append(f"  rotate   {entry.secret} ({entry.rotator}, every {every})")
    lines.append(f"audit      {agent.audit_log or 'off'}")
    return lines


def _where(backend: FileBackendConfig | VaultBackendConfig | AwsBackendConfig) -> str:
    if backend.type == "file":
        return str(backend.path)
    if backend.type == "vault":
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

"""`secretd check` (`check_config`): build every part of a config as the agent
would (secretd.graph: backends opened - never contacting a remote one - with
their own checks, the access policy, the TCP token, rotations), then verify
what otherwise fails only once the agent runs:

- Every template's reads resolve. The secrets a template names in writing
  (`secret("db/app", "password")`, `secret_json("x")["key"]`, every `vars`
  entry) are looked up: on a file store the secret, the stage and the field
  must exist (values are read and dropped, never shown); on a remote backend
  nothing is asked (check never contacts one), which the summary says.
  `[[credential]]` secrets are resolved the same way; a `[[secret]]` that is
  not in its store yet is a warning (it may be put after the agent starts).
- Every destination passes the writer's own rules (render.writer.check_destination):
  its directory exists and no other user can write it or any directory above.
- The audit log can be opened: an existing file passes the agent's rules, a
  missing one has a directory the agent can create it in.
- Without any `[[allow]]` rule every read is denied: a warning, not an error.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from secretd.access.policy import Policy
from secretd.api.tcp import load_token
from secretd.audit import check_audit_target
from secretd.backends.base import Backend, CheckableBackend
from secretd.backends.registry import close_backends, open_one
from secretd.backends.router import Router
from secretd.cache.persist import check_persist_settings
from secretd.config import Config
from secretd.errors import ConfigError, NotFound, SecretdError
from secretd.fileperm import owner_problem, trusted_owners
from secretd.model import CURRENT, SecretName, SecretValue
from secretd.render.jinja import build_environment
from secretd.render.literal import LiteralRead
from secretd.render.sink import TemplateSink, load_sink
from secretd.render.writer import check_destination
from secretd.rotation.build import check_rotations

# Where a read comes from (for messages), what it reads, and whether failing it
# is a problem (a render or a credential would fail) or a warning (a declared
# secret may be put after the agent starts; health says so until then).
Read = tuple[str, LiteralRead, bool]


@dataclass
class Findings:
    """What check found: problems (exit 2), warnings, and notes for the summary."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_templates(config: Config, findings: Findings) -> list[TemplateSink]:
    """Every template that compiles; one problem per one that does not."""
    env = build_environment()
    sinks = []
    for template in config.template:
        try:
            sinks.append(load_sink(template, env))
        except SecretdError as exc:
            findings.problems.append(exc.message)
    return sinks


async def check_destinations(sinks: list[TemplateSink], findings: Findings) -> None:
    """Each destination by the writer's own rules, trusting the owners the agent will."""
    trusted = trusted_owners()
    for sink in sinks:
        try:
            await asyncio.to_thread(check_destination, sink.spec, also_trusted=trusted)
        except SecretdError as exc:
            findings.problems.append(f"template {exc.message}")  # it names the destination


def reads_of(config: Config, sinks: list[TemplateSink], findings: Findings) -> list[Read]:
    """What the agent will read by name: declared secrets, templates, credentials."""
    reads = [
        (f"secret[{i}]", LiteralRead(d.name, None, CURRENT, 0), False)
        for i, d in enumerate(config.secret)
    ]
    for sink in sinks:
        if sink.computed_reads:
            findings.notes.append(
                f"template {sink.destination}: {sink.computed_reads} secret() call(s) with "
                "computed arguments are resolved only when rendering"
            )
        for read in sink.literal_reads():
            line = f" line {read.line}" if read.line else ""
            reads.append((f"template {sink.destination}{line}", read, True))
    for i, cred in enumerate(config.credential):
        read = LiteralRead(cred.secret, cred.field, CURRENT, 0)
        reads.append((f"credential[{i}] ({cred.id})", read, True))
    return reads


async def check_reads(
    config: Config, reads: list[Read], backends: Mapping[str, Backend], findings: Findings
) -> None:
    """Resolve each read on the file stores; count the ones on remote backends."""
    router = Router(backends, {name: config.backends[name].mount for name in backends})
    unchecked: dict[str, set[str]] = {}
    for where, read, strict in reads:
        problem = await _resolve(read, router, config, unchecked)
        if problem is not None:
            found = findings.problems if strict else findings.warnings
            found.append(f"{where}: secret {read.secret}: {problem}")
    for backend, names in sorted(unchecked.items()):
        kind = config.backends[backend].type
        findings.notes.append(
            f"backend {backend} ({kind}): {len(names)} secret(s) read by name were not "
            "checked (check never contacts a remote backend)"
        )


async def _resolve(
    read: LiteralRead, router: Router, config: Config, unchecked: dict[str, set[str]]
) -> str | None:
    """Why `read` would fail at run time, or None (also when it cannot be told here)."""
    try:
        backend_name, stripped = router.locate(SecretName(read.secret))
    except SecretdError as exc:
        return exc.message.removeprefix(f"secret {read.secret!r} ")
    if config.backends[backend_name].type != "file":
        unchecked.setdefault(backend_name, set()).add(read.secret)
        return None
    stage = None if read.stage == CURRENT else read.stage
    try:
        fetched = await router.backends[backend_name].fetch(stripped, stage=stage)
    except NotFound:
        if stage is None:
            return f"not in the file store of backend {backend_name!r}"
        return f"has no {read.stage} version in the file store of backend {backend_name!r}"
    except SecretdError as exc:
        return exc.message
    value = fetched.version.value
    if read.field is not None:
        try:
            value.field(read.field)
        except SecretdError as exc:
            return exc.message.removeprefix("the secret ")
    elif read.json_object and not _json_object(value):
        return "the value is not a JSON object (secret_json needs one)"
    return None


def _json_object(value: SecretValue) -> bool:
    text = value.text()
    try:
        return text is not None and isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return False


async def check_config(config: Config) -> Findings:
    """Everything `secretd check` reports about `config` (see the module docstring)."""
    findings = Findings()
    for check in (
        lambda: _check_socket_dir(config),
        lambda: Policy(config.allow),
        lambda: _check_tcp(config),
        lambda: check_audit(config),
        lambda: check_state_dir(config),
        lambda: check_rotations(config.rotation, config.backends),
        lambda: check_persist_settings(config.cache),
    ):
        try:
            check()
        except SecretdError as exc:
            findings.problems.append(exc.message)
    if (warning := check_rules(config)) is not None:
        findings.warnings.append(warning)
    sinks = load_templates(config, findings)
    await check_destinations(sinks, findings)
    backends: dict[str, Backend] = {}
    try:
        for name in config.backends:
            backend = await _open_for_check(name, config, findings)
            if backend is not None:
                backends[name] = backend
        if len(backends) == len(config.backends):  # else names would route elsewhere
            await check_reads(config, reads_of(config, sinks, findings), backends, findings)
    finally:
        await close_backends(backends)
    return findings


async def _open_for_check(name: str, config: Config, findings: Findings) -> Backend | None:
    """Open one backend as the agent would (never contacting a remote server) and
    run its own deeper check (the file store verifies its records against its keys)."""
    try:
        backend = await open_one(
            name, config.backends[name], max_secret_bytes=config.limits.max_secret_bytes
        )
    except SecretdError as exc:
        findings.problems.append(exc.message)
        return None
    if isinstance(backend, CheckableBackend):
        findings.problems.extend(await backend.check())
    return backend


def _check_socket_dir(config: Config) -> None:
    parent = config.agent.socket.parent
    if not parent.is_dir():
        raise ConfigError(f"agent.socket {config.agent.socket}: directory {parent} does not exist")


def _check_tcp(config: Config) -> None:
    if config.tcp is not None:
        load_token(config.tcp.token_file)


def check_audit(config: Config) -> None:
    """The audit log the agent will open at start: an existing file must pass its
    rules; a missing one needs a directory the agent can create it in."""
    target = config.agent.audit_log
    check_audit_target(target)
    if target is None or target == "-" or Path(target).exists():
        return
    directory = Path(target).parent
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"audit_log {target}: cannot be created: {directory} is not writable")


def check_state_dir(config: Config) -> None:
    """`agent.state_dir` as the agent will open it: an existing one must be a
    directory with a trusted owner that others cannot write; a missing one is
    created at start, so its nearest existing parent must be writable."""
    path = config.agent.state_dir
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        parent = next(p for p in path.parents if p.exists())
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(
                f"agent.state_dir {path}: cannot be created: {parent} is not writable"
            ) from None
        return
    problem = owner_problem(st.st_uid)
    if not stat.S_ISDIR(st.st_mode):
        problem = "not a directory"
    elif problem is None and stat.S_IMODE(st.st_mode) & 0o022:
        problem = f"mode {stat.S_IMODE(st.st_mode):04o} lets others write it; chmod 0700 {path}"
    if problem is not None:
        raise ConfigError(f"agent.state_dir {path}: {problem}")


def check_rules(config: Config) -> str | None:
    """A warning when no rule allows anything: every read would be denied."""
    if config.allow:
        return None
    return (
        "no [[allow]] rule: every read through the socket or TCP will be denied "
        "(templates and credentials are not affected); add one, docs/security.md"
    )

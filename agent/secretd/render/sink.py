"""One `[[template]]`: turn secrets into the bytes of one file and write them.

`TemplateSink.apply(fetch)` renders (text through the sandboxed Jinja
environment; env and json from `vars`), then writes atomically. It records
which secrets it read - even when the render fails - so the runner knows what
to subscribe to. It never runs the command; the runner decides that.

`load_sinks` is also what `secretd check` uses to validate templates: it reads
every source, compiles it and resolves users and groups, raising ConfigError.
"""

from __future__ import annotations

import asyncio
import grp
import pwd
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from secretd.config.schema import TemplateConfig
from secretd.errors import ConfigError, SecretdError
from secretd.fileperm import read_private_file
from secretd.model import CURRENT, SecretName, SecretValue
from secretd.render.errors import TemplateError
from secretd.render.formats import VarRef, parse_vars, render_env, render_json
from secretd.render.literal import LiteralRead
from secretd.render.writer import FileSpec, write_atomic

if TYPE_CHECKING:  # Jinja2 is imported only when a text template is configured
    from secretd.render.jinja import CompiledTemplate, Fetch, SecretSandbox

MAX_SOURCE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SinkResult:
    """What one apply did: `changed` means the file was (re)written."""

    changed: bool
    size: int


class TemplateSink:
    """A rendered file: its inputs, its output spec, and what it last read."""

    def __init__(
        self,
        config: TemplateConfig,
        spec: FileSpec,
        *,
        compiled: CompiledTemplate | None,
        refs: tuple[VarRef, ...],
    ) -> None:
        self.config = config
        self.spec = spec
        self._compiled = compiled
        self._refs = refs
        self._wants: frozenset[SecretName] = frozenset(ref.secret for ref in refs)

    @property
    def destination(self) -> str:
        return str(self.spec.path)

    def literal_reads(self) -> tuple[LiteralRead, ...]:
        """What `secretd check` can resolve without rendering: a text template's
        secret() calls with written arguments, or every `vars` entry."""
        if self._compiled is not None:
            return self._compiled.reads
        return tuple(LiteralRead(ref.secret, ref.field, CURRENT, 0) for ref in self._refs)

    @property
    def computed_reads(self) -> int:
        """secret() calls whose arguments only rendering tells (check cannot resolve them)."""
        return self._compiled.computed_reads if self._compiled is not None else 0

    def wants(self) -> frozenset[SecretName]:
        """Every secret this file has read (learnt while rendering; fixed for env/json)."""
        return self._wants

    async def render(self, fetch: Fetch) -> bytes:
        """The file's bytes. Raises a TemplateError that names no value."""

        async def recording_fetch(name: SecretName, stage: str) -> SecretValue:
            self._wants = self._wants | {name}
            return await fetch(name, stage)

        if self._compiled is not None:
            from secretd.render.jinja import render_text

            return await render_text(self._compiled, recording_fetch)
        values: dict[str, SecretValue] = {}
        sources: dict[str, str] = {}
        for ref in self._refs:
            try:
                value = await recording_fetch(ref.secret, CURRENT)
                values[ref.var] = value.field(ref.field) if ref.field else value
            except SecretdError as exc:
                raise TemplateError(
                    f"variable {ref.var}: secret {ref.secret}: {exc}",
                    secret=ref.secret,
                    cause=exc.code,
                ) from None
            sources[ref.var] = ref.secret
        if self.config.format == "env":
            return render_env(values, sources=sources)
        return render_json(values, sources=sources)

    async def apply(self, fetch: Fetch) -> SinkResult:
        """Render and write; unchanged output is not rewritten."""
        data = await self.render(fetch)
        changed = await asyncio.to_thread(write_atomic, self.spec, data)
        return SinkResult(changed=changed, size=len(data))


def load_sinks(
    templates: Sequence[TemplateConfig], env: SecretSandbox | None = None
) -> list[TemplateSink]:
    """Build (and so validate) every template. Raises ConfigError naming the file and line."""
    if env is None and any(config.format == "text" for config in templates):
        from secretd.render.jinja import build_environment

        env = build_environment()
    return [load_sink(config, env) for config in templates]


def load_sink(config: TemplateConfig, env: SecretSandbox | None) -> TemplateSink:
    where = f"template {config.destination}"
    spec = FileSpec(
        path=config.destination,
        mode=config.mode,
        uid=_uid(config.user, where),
        gid=_gid(config.group, where),
    )
    if config.format != "text":
        refs = parse_vars(config.vars or {}, where=where, env=config.format == "env")
        return TemplateSink(config, spec, compiled=None, refs=refs)
    if config.source is not None:
        origin, source = str(config.source), _read_source(config.source)
    else:
        origin, source = f"{where} (contents)", config.contents or ""
    from secretd.render.jinja import build_environment, compile_template

    compiled = compile_template(env or build_environment(), source, origin=origin)
    return TemplateSink(config, spec, compiled=compiled, refs=())


def _read_source(path: Path) -> str:
    # Whoever may rewrite a template decides which secrets go into its file.
    raw = read_private_file(path, what="template source", secret=False, limit=MAX_SOURCE_BYTES)
    if len(raw) > MAX_SOURCE_BYTES:
        raise ConfigError(f"template source {path}: larger than {MAX_SOURCE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"template source {path}: not valid UTF-8") from None


def _uid(user: str | None, where: str) -> int | None:
    if user is None:
        return None
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise ConfigError(f"{where}: user: no such user {user!r}") from None


def _gid(group: str | None, where: str) -> int | None:
    if group is None:
        return None
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"{where}: group: no such group {group!r}") from None

"""The template runner: keeps every `[[template]]` file in step with its secrets.

    first_render()   render every template once, concurrently (before the agent
                     reports ready); commands for files that changed are run
                     later, by run(), so readiness never waits on a command
    run()            one task per template plus one dispatcher:
                     hub events -> drain the queue, coalesce names ->
                     forget those names in the shared read memo ->
                     wake the templates that read any of them
                     a woken template debounces (wait.min of quiet, at most
                     wait.max after the first change), renders, writes only when
                     the bytes/mode/owner differ, then runs its command - one at
                     a time per template; a failed render keeps the old file
                     and retries with exponential backoff (and at once on the
                     next change of a secret it reads)
    status()         per template: destination, ok, last_error (and the secret it
                     is about, kept apart for health's per-caller view), last_rendered

Secrets are read through a `ReadMemo` shared by all templates, so one change
used by ten templates is one read. Everything a template reads is `pin`ned so
the cache keeps it loaded and fresh. Status and logs carry reasons, never values.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from secretd.audit import AuditSink
from secretd.backoff import Backoff
from secretd.clock import Clock
from secretd.config.schema import TemplateConfig
from secretd.errors import SecretdError
from secretd.events import Hub, Subscription
from secretd.model import SecretName, SecretReader, rfc3339
from secretd.render.command import CommandResult, run_command
from secretd.render.errors import TemplateError
from secretd.render.reads import ReadMemo
from secretd.render.sink import SinkResult, TemplateSink, load_sinks
from secretd.usage import UsageSink

log = structlog.get_logger(__name__)


class RenderMetrics(Protocol):
    """The part of `metrics.Metrics` the runner uses."""

    def render(self, template: str, result: str) -> None:
        """`result`: written, unchanged or error."""
        ...


@dataclass(frozen=True, slots=True)
class TemplateStatus:
    """What `status` and `/v1/health` show for one template. Never a value."""

    destination: str
    ok: bool
    last_error: str | None
    last_rendered: str | None  # RFC 3339: the last successful render (written or unchanged)
    renders: int = 0
    writes: int = 0
    last_command: str | None = None  # "exited with status 0", "killed after its timeout", ...
    # What last_error is about, apart from its text: health shows the text only to
    # callers who may read `error_secret`; others get `error_cause`, a fixed code.
    error_secret: SecretName | None = None
    error_cause: str | None = None


@dataclass(eq=False)
class _Slot:
    """One template's live state."""

    sink: TemplateSink
    trigger: asyncio.Event = field(default_factory=asyncio.Event)
    ok: bool = False
    last_error: str | None = None
    error_secret: SecretName | None = None
    error_cause: str | None = None
    last_rendered: str | None = None
    renders: int = 0
    writes: int = 0
    failures: int = 0
    command_pending: bool = False
    last_command: str | None = None
    pinned: frozenset[SecretName] = frozenset()

    def status(self) -> TemplateStatus:
        return TemplateStatus(
            destination=self.sink.destination,
            ok=self.ok,
            last_error=self.last_error,
            last_rendered=self.last_rendered,
            renders=self.renders,
            writes=self.writes,
            last_command=self.last_command,
            error_secret=self.error_secret,
            error_cause=self.error_cause,
        )


class TemplateRunner:
    """Renders `templates` from `reader`, re-rendering on `hub` changes."""

    def __init__(
        self,
        templates: Sequence[TemplateConfig],
        reader: SecretReader,
        hub: Hub,
        *,
        pin: Callable[[Iterable[SecretName]], None],
        clock: Clock,
        metrics: RenderMetrics | None = None,
        audit: AuditSink | None = None,
        rng: random.Random | None = None,
        retry_base: float = 1.0,
        retry_max: float = 60.0,
        usage: UsageSink | None = None,
    ) -> None:
        """Compiles every template now: raises ConfigError for a bad one."""
        self._slots = [_Slot(sink) for sink in load_sinks(templates)]
        self._memo = ReadMemo(reader, usage=usage)
        self._hub = hub
        self._pin = pin
        self._clock = clock
        self._metrics = metrics
        self._audit = audit
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not crypto
        self._retry = Backoff(base=retry_base, cap=retry_max)
        for slot in self._slots:
            self._pin_wants(slot)

    @property
    def memo(self) -> ReadMemo:
        return self._memo

    def status(self) -> list[TemplateStatus]:
        return [slot.status() for slot in self._slots]

    async def first_render(self) -> list[TemplateStatus]:
        """Render every template once, concurrently. Never raises for a failed render."""
        await asyncio.gather(*(self._render(slot) for slot in self._slots))
        return self.status()

    async def run(self) -> None:
        """Keep files up to date until cancelled."""
        async with self._hub.subscribe() as subscription:
            # Changes published before we subscribed were not seen: start from a
            # fresh memo and re-check every file (unchanged output writes nothing).
            self._memo.clear()
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._dispatch(subscription))
                    for slot in self._slots:
                        group.create_task(self._serve(slot))
            finally:
                await self._memo.aclose()

    async def _dispatch(self, subscription: Subscription) -> None:
        while True:
            first = await subscription.get()
            names = {first.name} | {event.name for event in subscription.drain()}
            self._memo.invalidate(names)
            for slot in self._slots:
                if not slot.sink.wants().isdisjoint(names):
                    slot.trigger.set()

    async def _serve(self, slot: _Slot) -> None:
        """One template's loop: first re-check immediately, then wait, debounce, render."""
        immediate = True
        while True:
            if slot.command_pending:
                await self._run_command(slot)
            if not immediate:
                await slot.trigger.wait()
                await self._debounce(slot)
            immediate = False
            slot.trigger.clear()
            if not await self._render(slot):
                await self._back_off(slot)

    async def _debounce(self, slot: _Slot) -> None:
        """Wait for `wait.min` without a new change, but no longer than `wait.max`."""
        wait = slot.sink.config.wait
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait.max
        while True:
            slot.trigger.clear()
            quiet = min(wait.min, deadline - loop.time())
            if quiet <= 0:
                return
            try:
                async with asyncio.timeout(quiet):
                    await slot.trigger.wait()
            except TimeoutError:
                return

    async def _back_off(self, slot: _Slot) -> None:
        """After a failure: retry after a jittered, growing delay, or sooner on a change."""
        delay = self._retry.delay(slot.failures, self._rng)
        try:
            async with asyncio.timeout(delay):
                await slot.trigger.wait()
        except TimeoutError:
            slot.trigger.set()

    async def _render(self, slot: _Slot) -> bool:
        """Render and write one template; record the outcome. True when it succeeded."""
        destination = slot.sink.destination
        try:
            result: SinkResult = await slot.sink.apply(self._memo.value)
        except TemplateError as exc:
            return self._failed(slot, str(exc), exc.secret, exc.cause)
        except SecretdError as exc:  # the writer's refusals and failures
            return self._failed(slot, str(exc), None, exc.code)
        except Exception as exc:  # a bug: keep serving, say what kind
            log.exception("template.render_crashed", destination=destination)
            return self._failed(slot, f"internal error ({type(exc).__name__})", None, "internal")
        finally:
            self._pin_wants(slot)
        slot.ok, slot.last_error, slot.failures = True, None, 0
        slot.error_secret = slot.error_cause = None
        slot.renders += 1
        slot.last_rendered = rfc3339(self._clock.now())
        if result.changed:
            slot.writes += 1
            slot.command_pending = slot.sink.config.command is not None
            log.info("template.rendered", destination=destination, size=result.size)
        else:
            log.debug("template.unchanged", destination=destination)
        self._observe(destination, "written" if result.changed else "unchanged")
        return True

    def _failed(self, slot: _Slot, reason: str, secret: SecretName | None, cause: str) -> bool:
        slot.ok, slot.last_error = False, reason
        slot.error_secret, slot.error_cause = secret, cause
        slot.failures += 1
        log.warning("template.render_failed", destination=slot.sink.destination, error=reason)
        self._observe(slot.sink.destination, "error", reason)
        return False

    def _observe(self, destination: str, result: str, reason: str | None = None) -> None:
        if self._metrics is not None:
            self._metrics.render(destination, result)
        if self._audit is not None and result != "unchanged":
            extra = {"destination": destination} | ({"reason": reason} if reason else {})
            self._audit.record(
                "render", secret=None, version_id=None, caller=None, result=result, **extra
            )

    def _pin_wants(self, slot: _Slot) -> None:
        wants = slot.sink.wants()
        new = wants - slot.pinned
        if new:
            slot.pinned = wants
            self._pin(sorted(new))

    async def _run_command(self, slot: _Slot) -> CommandResult | None:
        config = slot.sink.config
        assert config.command is not None
        slot.command_pending = False
        try:
            result = await run_command(config.command, limit=config.command_timeout)
        except Exception as exc:  # a bug must not stop the other templates
            log.exception("template.command_crashed", destination=slot.sink.destination)
            slot.last_command = f"internal error ({type(exc).__name__})"
            return None
        slot.last_command = result.describe()
        log_event = log.info if result.ok else log.warning
        log_event(
            "template.command_finished",
            destination=slot.sink.destination,
            command=config.command[0],
            result=slot.last_command,
            seconds=round(result.seconds, 3),
            output_bytes=result.output_bytes,
        )
        return result

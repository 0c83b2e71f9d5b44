"""The template runner with a real in-memory SecretReader, a real Hub, real
files and real commands: outputs, rotation, debounce, shared reads, failures."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from secretd.audit import AuditLog
from secretd.clock import SystemClock
from secretd.config.schema import TemplateConfig
from secretd.errors import ConfigError
from secretd.model import SecretName
from secretd.render.command import command_environment
from secretd.render.runner import TemplateRunner
from tests.fakes.dict_reader import DictReader
from tests.integration.waits import until

CANARY = "canary-5b1d-rotating-value"


class RecordingMetrics:
    def __init__(self) -> None:
        self.renders: list[tuple[str, str]] = []

    def render(self, template: str, result: str) -> None:
        self.renders.append((template, result))


class Pins:
    def __init__(self) -> None:
        self.names: set[str] = set()

    def __call__(self, names: Iterable[SecretName]) -> None:
        self.names.update(names)


def template(dest: Path, **fields: Any) -> TemplateConfig:
    fields.setdefault("wait", {"min": "0ms", "max": "0ms"})
    return TemplateConfig.model_validate({"destination": str(dest), **fields})


def make_runner(
    templates: list[TemplateConfig], reader: DictReader, **kwargs: Any
) -> tuple[TemplateRunner, Pins]:
    pins = Pins()
    runner = TemplateRunner(
        templates, reader, reader.hub, pin=pins, clock=SystemClock(), retry_base=0.05, **kwargs
    )
    return runner, pins


@asynccontextmanager
async def running(runner: TemplateRunner) -> AsyncIterator[None]:
    await runner.first_render()
    task = asyncio.create_task(runner.run())
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_text_env_and_json_outputs(tmp_path: Path) -> None:
    reader = DictReader()
    reader.put("db/app", '{"user": "app", "password": "p$w\\"d"}', publish=False)
    reader.put("api/key", "k\ney", publish=False)
    runner, pins = make_runner(
        [
            template(tmp_path / "app.conf", contents="user={{ secret('db/app', 'user') }}\n"),
            template(tmp_path / "app.env", format="env", vars={"PW": "db/app#password"}),
            template(tmp_path / "app.json", format="json", vars={"key": "api/key"}, mode="0640"),
        ],
        reader,
    )
    statuses = await runner.first_render()
    assert [s.ok for s in statuses] == [True, True, True]
    assert (tmp_path / "app.conf").read_text() == "user=app\n"
    assert (tmp_path / "app.env").read_text() == 'PW="p\\$w\\"d"\n'
    assert orjson.loads((tmp_path / "app.json").read_bytes()) == {"key": "k\ney"}
    assert oct(os.stat(tmp_path / "app.json").st_mode & 0o777) == "0o640"
    assert pins.names == {"db/app", "api/key"}
    assert all(s.last_rendered and s.last_error is None for s in runner.status())


async def test_rotation_rerenders_and_runs_command_unrelated_does_not(tmp_path: Path) -> None:
    reader = DictReader()
    reader.put("db/app", "one", publish=False)
    reader.put("other", "x", publish=False)
    count = tmp_path / "count"
    dest = tmp_path / "app.conf"
    runner, _ = make_runner(
        [
            template(
                dest,
                contents="{{ secret('db/app') }}\n",
                command=["/bin/sh", "-c", f"echo ran >> {count}"],
            )
        ],
        reader,
    )
    async with running(runner):
        await until(lambda: len(lines(count)) == 1)  # the first render's command
        inode = os.stat(dest).st_ino
        reader.put("other", "y")
        reader.put("db/app", "one")  # new version, same bytes: no write, no command
        await asyncio.sleep(0.3)
        assert os.stat(dest).st_ino == inode
        assert len(lines(count)) == 1
        reader.put("db/app", "two")
        await until(lambda: dest.read_text() == "two\n" and len(lines(count)) == 2)
        await asyncio.sleep(0.2)
        assert len(lines(count)) == 2
    assert runner.status()[0].writes == 2
    assert runner.status()[0].last_command == "exited with status 0"


async def test_fifty_rotations_in_a_second_are_debounced(tmp_path: Path) -> None:
    reader = DictReader()
    reader.put("db/app", "v0", publish=False)
    count = tmp_path / "count"
    dest = tmp_path / "app.conf"
    metrics = RecordingMetrics()
    runner, _ = make_runner(
        [
            template(
                dest,
                contents="{{ secret('db/app') }}",
                wait={"min": "100ms", "max": "300ms"},
                command=["/bin/sh", "-c", f"echo ran >> {count}"],
            )
        ],
        reader,
        metrics=metrics,
    )
    async with running(runner):
        await until(lambda: len(lines(count)) == 1)
        for i in range(1, 51):
            reader.put("db/app", f"v{i}")
            await asyncio.sleep(0.02)
        await until(lambda: dest.read_text() == "v50")
        await asyncio.sleep(0.5)
    writes = runner.status()[0].writes - 1
    commands = len(lines(count)) - 1
    # ~1 s of changes with max=300ms: about 4 renders; far below 50 either way
    print(f"50 rotations -> {writes} writes, {commands} commands")
    assert 1 <= writes <= 8, writes
    assert 1 <= commands <= writes
    assert len(metrics.renders) <= 12


async def test_each_secret_is_read_once_per_change_across_templates(tmp_path: Path) -> None:
    reader = DictReader(delay=0.05)
    reader.put("shared", "a", publish=False)
    templates = [
        template(tmp_path / f"t{i}.conf", contents="{{ secret('shared') }}{{ secret('shared') }}")
        for i in range(5)
    ]
    runner, _ = make_runner(templates, reader)
    async with running(runner):
        await until(lambda: all(s.renders >= 2 for s in runner.status()))  # first + re-check
        before = reader.reads["shared"]
        reader.put("shared", "b")
        await until(lambda: all(p.read_text() == "bb" for p in tmp_path.glob("t*.conf")))
    assert reader.reads["shared"] - before == 1


async def test_missing_secret_never_writes_a_partial_file(tmp_path: Path) -> None:
    reader = DictReader()
    reader.put("present", "yes", publish=False)
    dest = tmp_path / "app.conf"
    runner, pins = make_runner(
        [template(dest, contents="a={{ secret('present') }}\nb={{ secret('later') }}\n")], reader
    )
    [status] = await runner.first_render()
    assert not status.ok and "later" in (status.last_error or "")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []
    assert pins.names == {"present", "later"}
    async with running(runner):
        reader.put("later", "now")
        await until(lambda: dest.exists())
    assert dest.read_text() == "a=yes\nb=now\n"
    assert runner.status()[0].ok


async def test_failed_render_keeps_the_last_good_file_and_retries(tmp_path: Path) -> None:
    reader = DictReader()
    reader.put("db/app", "good", publish=False)
    dest = tmp_path / "app.conf"
    runner, _ = make_runner([template(dest, contents="{{ secret('db/app') }}")], reader)
    async with running(runner):
        await until(lambda: runner.status()[0].renders >= 2)
        reader.failing.add("db/app")
        reader.put("db/app", "unreachable")
        await until(lambda: not runner.status()[0].ok)
        status = runner.status()[0]
        assert "backend for db/app is down" in (status.last_error or "")
        assert dest.read_text() == "good"
        reads = reader.reads["db/app"]
        await until(lambda: reader.reads["db/app"] >= reads + 2)  # backoff retries
        reader.failing.clear()
        await until(lambda: runner.status()[0].ok)
        assert dest.read_text() == "unreachable"


async def test_sandbox_escape_fails_without_output(tmp_path: Path) -> None:
    reader = DictReader()
    reader.put("k", CANARY, publish=False)
    dest = tmp_path / "app.conf"
    runner, _ = make_runner(
        [
            template(
                dest, contents="{{ secret('k') }}{{ ''.__class__.__mro__[1].__subclasses__() }}"
            )
        ],
        reader,
    )
    [status] = await runner.first_render()
    assert not status.ok
    assert "sandbox refused" in (status.last_error or "")
    assert CANARY not in (status.last_error or "")
    assert not dest.exists()


async def test_bad_template_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"contents.*:1: template syntax error"):
        make_runner([template(tmp_path / "x", contents="{% for %}")], DictReader())
    source = tmp_path / "t.j2"
    source.write_text("ok\n{{ }\n")
    with pytest.raises(ConfigError, match=f"{source}:2: template syntax error"):
        make_runner([template(tmp_path / "x", source=str(source))], DictReader())
    with pytest.raises(ConfigError, match="no such user"):
        make_runner([template(tmp_path / "x", contents="x", user="no-such-user-r5")], DictReader())


async def test_commands_never_overlap_and_hold_no_secret(tmp_path: Path) -> None:
    reader = DictReader()
    reader.put("db/app", CANARY + "-0", publish=False)
    dest = tmp_path / "app.conf"
    log = tmp_path / "log"
    script = f"echo start $$ >> {log}; cat {dest} > /dev/null; sleep 0.3; echo end $$ >> {log}"
    runner, _ = make_runner(
        [template(dest, contents="{{ secret('db/app') }}", command=["/bin/sh", "-c", script])],
        reader,
    )
    async with running(runner):
        await until(lambda: any(line.startswith("start") for line in lines(log)))
        pid = int(lines(log)[0].split()[1])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert CANARY.encode() not in cmdline and CANARY.encode() not in environ
        expected_env = sorted(f"{k}={v}".encode() for k, v in command_environment().items())
        assert sorted(environ.rstrip(b"\0").split(b"\0")) == expected_env
        for i in range(1, 4):
            reader.put("db/app", f"{CANARY}-{i}")
            await asyncio.sleep(0.1)
        await until(lambda: dest.read_text() == f"{CANARY}-3")
        await until(lambda: len(lines(log)) >= 4 and lines(log)[-1].startswith("end"), within=15)
        await asyncio.sleep(0.5)
    events = [line.split()[0] for line in lines(log)]
    assert events[: len(events) // 2 * 2] == ["start", "end"] * (len(events) // 2)


async def test_changes_before_run_are_not_missed(tmp_path: Path) -> None:
    reader = DictReader()
    reader.put("db/app", "first", publish=False)
    dest = tmp_path / "app.conf"
    runner, _ = make_runner([template(dest, contents="{{ secret('db/app') }}")], reader)
    await runner.first_render()
    reader.put("db/app", "second")  # published while nobody is subscribed yet
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: dest.read_text() == "second")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_status_and_logs_never_carry_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reader = DictReader()
    reader.put("db/app", '{"password": "' + CANARY + '"}', publish=False)
    runner, _ = make_runner(
        [
            template(tmp_path / "a", contents="{{ secret('db/app', 'nope') }}"),
            template(tmp_path / "b", format="env", vars={"X": "db/app#password"}),
            template(tmp_path / "c", contents="{{ {}.pop(secret('db/app')) }}"),
        ],
        reader,
    )
    statuses = await runner.first_render()
    assert [s.ok for s in statuses] == [False, True, False]
    captured = capsys.readouterr()
    assert CANARY not in repr(statuses) + captured.out + captured.err


async def test_writes_and_failures_are_audited_without_values(tmp_path: Path) -> None:
    reader = DictReader()
    reader.put("db/app", CANARY, publish=False)
    audit_path = tmp_path / "audit.jsonl"
    audit = AuditLog.open(str(audit_path))
    try:
        runner, _ = make_runner(
            [
                template(tmp_path / "ok.conf", contents="{{ secret('db/app') }}"),
                template(tmp_path / "bad.conf", contents="{{ secret('missing/x') }}"),
            ],
            reader,
            audit=audit,
        )
        await runner.first_render()
        await runner.first_render()  # unchanged: not audited again
    finally:
        audit.close()
    records = [orjson.loads(line) for line in audit_path.read_bytes().splitlines()]
    summary = sorted((r["event"], r["result"], Path(r["destination"]).name) for r in records)
    assert summary == [
        ("render", "error", "bad.conf"),
        ("render", "error", "bad.conf"),
        ("render", "written", "ok.conf"),
    ]
    assert CANARY not in audit_path.read_text()

"""`secretd render [-c FILE] [--once]`: fetch, render every template once, run
no commands, exit 0 when all rendered and 1 naming each failure (2 for a bad
config or template). Rendering once is all it does (`--once` only says so
explicitly); the running agent is what keeps files rendered.

It builds the agent's own graph (backends, cache, templates: secretd.graph)
but runs none of its loops, so nothing outlives the one pass; every backend
call is bounded by the backend's `timeout`, so a missing or unreachable secret
ends the run with an error rather than a wait. Rollback marks are not kept
(no state directory is used), since the agent owns them.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from secretd.cli.options import config_option, config_path

if TYPE_CHECKING:
    from secretd.config.schema import Config
    from secretd.render.runner import TemplateStatus

# Slack on top of the slowest backend's timeout for the whole pass.
PASS_SLACK = 10.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "render",
        help="render every template once and exit",
        description="Fetch the secrets the templates use, render every [[template]] once "
        "(atomically; unchanged files are left alone), run no commands, and exit. To keep "
        "files rendered as secrets change, run the agent (`secretd agent`).",
        epilog="exit status: 0 all rendered, 1 a render failed (each named), 2 bad config "
        "or template. environment: SECRETD_CONFIG",
    )
    config_option(parser)
    parser.add_argument(
        "--once",
        action="store_true",
        help="render once and exit: what `render` always does (accepted for scripts)",
    )
    parser.set_defaults(run=run_render_once)


def run_render_once(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `secretd --help` must not pay for them.
    import asyncio

    import uvloop

    from secretd.config.load import load_config
    from secretd.logs import configure_logging

    path = config_path(args)
    config = load_config(path)
    configure_logging("debug" if args.debug else "error", config.agent.log_format)
    if not config.template:
        print(f"secretd: {path}: no [[template]] to render", file=sys.stderr)
        return 0
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        statuses = runner.run(render_once(config))
    return report(statuses)


async def render_once(config: Config) -> list[TemplateStatus]:
    """Render every template of `config` once, through the agent's own graph
    (secretd.graph) with none of its loops running; never runs commands."""
    import asyncio

    from secretd.graph import standalone_graph
    from secretd.render.sink import load_sinks

    call_timeout = max(backend.timeout for backend in config.backends.values())
    load_sinks(config.template)  # a bad template is a config error before any backend opens
    async with standalone_graph(config, state=None) as graph:
        runner = graph.templates
        try:
            async with asyncio.timeout(call_timeout * 2 + PASS_SLACK):
                return await runner.first_render()
        except TimeoutError:
            return runner.status()  # the unfinished ones are not ok


def report(statuses: list[TemplateStatus]) -> int:
    """One line per template (stdout for success, stderr for failure); the exit code."""
    failed = 0
    for status in statuses:
        if status.ok:
            verb = "rendered" if status.writes else "unchanged"
            print(f"{verb} {status.destination}")
        else:
            failed += 1
            reason = status.last_error or "did not finish in time"
            print(f"secretd: render failed: {status.destination}: {reason}", file=sys.stderr)
    if failed:
        print(f"secretd: {failed} of {len(statuses)} templates failed", file=sys.stderr)
        return 1
    return 0

"""`secretd` entry point: builds the parser from each command module and maps
errors to exit codes (0 ok, 1 runtime failure, 2 usage/config error).

Each command module exposes `register(subparsers)`, adding its subcommands with
`set_defaults(run=callable)`; `run(args) -> int` does the work.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import cast

from secretd import __version__
from secretd.cli.options import debug_option
from secretd.errors import ConfigError, InvalidName, InvalidRequest, SecretdError, UsageError

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


class Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (its default), kept for clarity."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"secretd: error: {message}\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: with only the module of the command it names
    registered (all of them when it names none, or one we do not know)."""
    parser = Parser(
        prog="secretd",
        description="A per-host secrets agent.",
        epilog="exit status: 0 success, 1 runtime failure, 2 bad command line or config. "
        "docs/reference/cli.md describes every command.",
    )
    parser.add_argument("--version", action="version", version=f"secretd {__version__}")
    debug_option(parser, default=False)
    sub: argparse._SubParsersAction[argparse.ArgumentParser]
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for register in _registrars(sys.argv[1:] if argv is None else argv):
        register(sub)
    for command in subcommands(parser):
        debug_option(command)  # `secretd get NAME --debug` works as well
    return parser


def subcommands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below `parser` (`store`, `store put`, ...), depth first."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases share a parser
                found.append(child)
                found.extend(subcommands(child))
    return found


# The module that registers each command. A run imports only its command's
# module: the CLI's start-up is most of what `secretd get` costs, and the agent
# has no use for the clients' HTTP stack.
COMMAND_MODULES = {
    "agent": "agent_cmds",
    "check": "agent_cmds",
    "store": "store_cmds",
    "get": "client_cmds",
    "status": "client_cmds",
    "exec": "client_cmds",
    "render": "render_cmds",
    "rotate": "rotate_cmds",
    "completion": "completion",
    "unused": "usage_cmds",
    "cache": "cache_cmds",
}
_MODULE_ORDER = (
    "agent_cmds",
    "store_cmds",
    "client_cmds",
    "render_cmds",
    "rotate_cmds",
    "completion",
    "usage_cmds",
    "cache_cmds",
)


def _registrars(words: Sequence[str]) -> list[Registrar]:
    """The `register` functions the command `words` names needs (the top-level
    options take no value, so the first word that is not one is the command)."""
    command = next((word for word in words if not word.startswith("-")), None)
    if command is None and "--version" in words:
        return []  # argparse prints the version before it looks for a command
    wanted = COMMAND_MODULES.get(command or "")
    names = (wanted,) if wanted is not None else _MODULE_ORDER
    # Each module imports only argparse-level things at the top; what a command
    # needs (the schema, the store, the SDK) is imported when it runs, so
    # `secretd get` never loads pydantic (tests/integration/test_cli_habits.py).
    # Imported here so `secretd --help` stays fast and a broken optional module
    # cannot take the whole CLI down at import time.
    modules = [importlib.import_module(f"secretd.cli.{name}") for name in names]
    return [cast(Registrar, module.register) for module in modules]


# Exit 2: the command line or the configuration is wrong; 1: it failed at run time.
USAGE_ERRORS = (UsageError, ConfigError, InvalidName, InvalidRequest)


def exit_code_of(exc: SecretdError) -> int:
    return 2 if isinstance(exc, USAGE_ERRORS) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except SecretdError as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        for line in str(exc).splitlines() or [""]:  # a config error: one line per problem
            print(f"secretd: {line}", file=sys.stderr)
        return exit_code_of(exc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `secretd check | head`: the reader left; not an error of ours
        _silence_stdout()
        return 1
    except Exception as exc:  # a bug: one line unless --debug
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"secretd: internal error ({type(exc).__name__}); run with --debug", file=sys.stderr)
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())

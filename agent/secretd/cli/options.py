"""Options several commands share, and where their defaults come from.

Import-light on purpose: every command module is imported to build the
parser, so `secretd get` pays for nothing but argparse here.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/secretd/secretd.toml")
CONFIG_ENV = "SECRETD_CONFIG"
SOCKET_ENV = "SECRETD_SOCKET"


def config_option(parser: argparse.ArgumentParser) -> None:
    """`-c FILE`; absent: $SECRETD_CONFIG, else /etc/secretd/secretd.toml (`config_path`)."""
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help=f"config file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})",
    )


def config_path(args: argparse.Namespace) -> Path:
    """The config file a command reads: -c, else $SECRETD_CONFIG, else the default."""
    given: Path | None = getattr(args, "config", None)
    if given is not None:
        return given
    from_env = os.environ.get(CONFIG_ENV, "")
    return Path(from_env) if from_env else DEFAULT_CONFIG


def socket_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket",
        metavar="PATH",
        help=f"the agent's socket (default: ${SOCKET_ENV}, else "
        "$XDG_RUNTIME_DIR/secretd.sock when not root, then /run/secretd/secretd.sock)",
    )


def debug_option(parser: argparse.ArgumentParser, *, default: object = argparse.SUPPRESS) -> None:
    """`--debug`, accepted before or after the subcommand (a subcommand's copy
    defaults to SUPPRESS so it never undoes one given earlier)."""
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks on errors"
    )

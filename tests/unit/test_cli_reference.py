"""docs/reference/cli.md is generated from the parser (secretd.cli.reference): it
must be the committed file, and it must name every command and option."""

from __future__ import annotations

from pathlib import Path

from secretd.cli.main import COMMAND_MODULES, build_parser, subcommands
from secretd.cli.reference import render

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "cli.md"


def test_the_committed_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text() == render(), (
        "docs/reference/cli.md is stale: run "
        "`.venv/bin/python -m secretd.cli.reference docs/reference/cli.md`"
    )


def test_every_command_and_option_is_described() -> None:
    text = render()
    for command in subcommands(build_parser([])):
        assert f"## {command.prog}\n" in text
        for action in command._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}`" in text, (command.prog, flag)


def test_each_command_loads_the_module_that_registers_it() -> None:
    # A run registers only its command's module (secretd.cli.main.COMMAND_MODULES);
    # a command missing there would still work but load every module.
    top = [c.prog.split()[1] for c in subcommands(build_parser([])) if len(c.prog.split()) == 2]
    assert sorted(COMMAND_MODULES) == sorted(top)
    for command, module in COMMAND_MODULES.items():
        alone = [c.prog.split()[1] for c in subcommands(build_parser([command, "--help"]))]
        assert command in alone, (command, module)

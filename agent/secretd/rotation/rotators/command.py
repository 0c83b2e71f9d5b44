"""`rotator = "command"`: an operator's programs apply and test the new value.

`create` makes a random value (or JSON field) like `random`; `set` runs the
`set` argv and `test` the `test` argv (if any), each with the pending value on
its standard input and nothing else: the same hardening as render commands
(render/command.py) - argv without a shell, a minimal environment, no
inherited descriptors, its own process group killed at `command_timeout`.
Exit status 0 is success. The commands' output is never logged (it may echo
the value); errors say only how the command ended.

`set` must be idempotent: after a crash it is run again with the same value.
"""

from __future__ import annotations

from collections.abc import Sequence

from secretd.config.rotation import CommandRotation
from secretd.model import SecretValue
from secretd.render.command import run_command
from secretd.rotation.errors import RotationError, RotationTestFailed
from secretd.rotation.model import Context
from secretd.rotation.rotators.values import generate


class CommandRotator:
    kind = "command"
    grace = 0.0

    def __init__(self, options: CommandRotation) -> None:
        self._options = options

    async def create(self, context: Context) -> SecretValue:
        o = self._options
        return generate(context.current.value, length=o.length, alphabet=o.alphabet, field=o.field)

    async def set(self, context: Context, value: SecretValue) -> None:
        problem = await self._run(self._options.set, value)
        if problem is not None:
            raise RotationError(f"set command {self._options.set[0]} {problem}")

    async def test(self, context: Context, value: SecretValue) -> None:
        if self._options.test is None:
            return
        problem = await self._run(self._options.test, value)
        if problem is not None:
            raise RotationTestFailed(f"test command {self._options.test[0]} {problem}")

    async def _run(self, argv: Sequence[str], value: SecretValue) -> str | None:
        result = await run_command(argv, limit=self._options.command_timeout, stdin=value.reveal())
        return None if result.ok else result.describe()

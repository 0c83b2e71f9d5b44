"""`rotator = "random"`: a new random value (or JSON field) and nothing else to
set or test. For values that only programs reading them from secretd use,
such as a shared HMAC key: `set` and `test` have no target."""

from __future__ import annotations

from secretd.config.rotation import RandomRotation
from secretd.model import SecretValue
from secretd.rotation.model import Context
from secretd.rotation.rotators.values import generate


class RandomRotator:
    kind = "random"
    grace = 0.0

    def __init__(self, options: RandomRotation) -> None:
        self._options = options

    async def create(self, context: Context) -> SecretValue:
        o = self._options
        return generate(context.current.value, length=o.length, alphabet=o.alphabet, field=o.field)

    async def set(self, context: Context, value: SecretValue) -> None:
        del context, value  # nothing outside secretd holds this value

    async def test(self, context: Context, value: SecretValue) -> None:
        del context, value

"""The reads shared by every template of one runner.

When a secret changes, every template that uses it re-renders; they should
not each ask the cache (and, on a miss, the backend) again. `ReadMemo` keeps
one read per (name, stage) - in flight, through `cache.flight.SingleFlight`,
or done - and hands it to everyone who asks until that name changes
(`invalidate`). A read that was under way when its name changed is handed to
whoever already waited on it but not kept, and the next ask reads again.
Failed reads are never kept.

It holds the same values the cache holds, for the names templates use.
"""

from __future__ import annotations

from collections.abc import Iterable

from secretd.cache.flight import SingleFlight
from secretd.model import CURRENT, SecretName, SecretReader, SecretValue
from secretd.usage import UsageSink

_Key = tuple[SecretName, str]


class ReadMemo:
    """Single-flight, change-invalidated reads of secret values through a SecretReader."""

    def __init__(self, reader: SecretReader, *, usage: UsageSink | None = None) -> None:
        self._reader = reader
        self._usage = usage  # each render's read of a secret counts (`secretd unused`)
        self._flights: SingleFlight[SecretValue] = SingleFlight()
        self._values: dict[_Key, SecretValue] = {}
        # Bumped by invalidate/clear: a read started before is not kept, and a
        # read started after never joins it.
        self._epochs: dict[SecretName, int] = {}
        self._epoch = 0
        self.reader_calls = 0  # how many reads reached the reader (tests, bench)

    async def value(self, name: SecretName, stage: str = CURRENT) -> SecretValue:
        key = (name, stage)
        value = self._values.get(key)
        if value is None:
            epoch = (self._epoch, self._epochs.get(name, 0))
            value = await self._flights.run((key, epoch), lambda: self._read(name, stage))
            if epoch == (self._epoch, self._epochs.get(name, 0)):
                self._values[key] = value
        if self._usage is not None:
            self._usage.note(name)
        return value

    async def _read(self, name: SecretName, stage: str) -> SecretValue:
        self.reader_calls += 1
        cached = await self._reader.read(name, stage=None if stage == CURRENT else stage)
        return cached.version.value

    def invalidate(self, names: Iterable[SecretName]) -> None:
        """Forget every stage of `names`: their next read goes to the reader."""
        for name in set(names):
            self._epochs[name] = self._epochs.get(name, 0) + 1
            for key in [k for k in self._values if k[0] == name]:
                del self._values[key]

    def clear(self) -> None:
        self._values.clear()
        self._epoch += 1

    async def aclose(self) -> None:
        """Cancel reads still in flight (shutdown)."""
        self._values.clear()
        await self._flights.aclose()

"""How hard the fuzz tier tries: a bounded, deterministic run in every `make test`
and CI run, a long random one with `make fuzz` (SECRETD_FUZZ=long).

Settings are applied per test (`@fuzz_settings(...)`), never as a global
Hypothesis profile, so the rest of the suite's property tests are unaffected.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from hypothesis import HealthCheck, settings

LONG = os.environ.get("SECRETD_FUZZ") == "long"
# Examples per test, long run: several minutes each on a small machine.
LONG_FACTOR = 40

T = TypeVar("T")


def fuzz_settings(examples: int) -> Callable[[T], T]:
    """`examples` in the bounded run (sized so the whole tier stays under a minute);
    LONG_FACTOR times as many, randomly seeded, with `make fuzz`."""
    return settings(
        max_examples=examples * LONG_FACTOR if LONG else examples,
        derandomize=not LONG,  # the same examples on every CI run: no flakes
        database=None,  # nothing carried between runs (or written into the checkout)
        deadline=None,  # a real agent on a shared machine: no per-example timing
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
        print_blob=True,
    )

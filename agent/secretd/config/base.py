"""The base of every config table.

Frozen (a config never changes once loaded), unknown keys are errors, and
every field is documented by the one-line docstring written directly below it
(`use_attribute_docstrings`): docs/reference/config.md is generated from those
docstrings by `python -m secretd.config.reference`, and a test fails when a
field has none.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """One TOML table of the config (docs/reference/config.md)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", str_strip_whitespace=False, use_attribute_docstrings=True
    )

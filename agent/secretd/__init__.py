"""secretd: a per-host secrets agent."""

__version__ = "0.2.0"

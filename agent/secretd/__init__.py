"""secretd: a per-host secrets agent."""

__version__ = "0.1.0"

"""The errors jaxnas reports to users (no JAX imported: the CLI catches them cheaply)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names it and what is allowed."""


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN/inf; the message names the step and the quantity."""


class DeviceOutOfMemoryError(RuntimeError):
    """A device ran out of memory; the message suggests the config keys to lower."""


class Interrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped the search after a checkpoint; `signum` says which."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum = signum

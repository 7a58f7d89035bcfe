"""The version of the installed distribution, read from its metadata (pyproject.toml is the one place it is written)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION"]

try:
    VERSION = version("recoverable")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"
"""The library's version, as `pip show recoverable` gives it."""

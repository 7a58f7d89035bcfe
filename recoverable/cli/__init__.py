"""The `recoverable` command: `recoverable serve` serves a storage over the key-value store API v2.

Run `recoverable serve --help` (or `python -m recoverable.cli serve --help`) for the options.
"""

from recoverable.cli._main import main

__all__ = ["main"]

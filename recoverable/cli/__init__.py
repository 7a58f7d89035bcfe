"""The `recoverable` command: look into and change stores, move them between storages, serve them over HTTP.

Run `recoverable --help` (or `python -m recoverable --help`) for the commands, and see docs/cli.md.
"""

from recoverable.cli._main import main

__all__ = ["main"]

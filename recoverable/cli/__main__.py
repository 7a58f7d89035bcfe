"""`python -m recoverable.cli`: the same as the `recoverable` command."""

from recoverable.cli._main import main

raise SystemExit(main())

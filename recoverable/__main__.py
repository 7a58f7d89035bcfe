"""`python -m recoverable`: the same as the `recoverable` command."""

from recoverable.cli import main

raise SystemExit(main())

"""``python -m suite`` entry point."""

from suite.cli import main

raise SystemExit(main())

"""``python -m suite`` entry point."""

from suite.app.cli import main

raise SystemExit(main())

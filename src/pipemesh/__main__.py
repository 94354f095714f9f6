"""``python -m pipemesh`` runs the CLI."""

from __future__ import annotations

from pipemesh.cli import main

raise SystemExit(main())

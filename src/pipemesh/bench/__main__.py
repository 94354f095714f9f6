"""``python -m pipemesh.bench``: the benchmark command line (see `pipemesh.bench.cli`)."""

from __future__ import annotations

import sys

from pipemesh.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m benchmarks.peers``: see :mod:`benchmarks.peers.main`."""

from __future__ import annotations

import sys

from benchmarks.peers.main import main

if __name__ == "__main__":
    sys.exit(main())

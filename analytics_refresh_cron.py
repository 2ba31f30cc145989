#!/usr/bin/env python3
"""The scheduled entry point: one refresh run, the same as ``analytics-refresh run``.

Schedulers start it from the project directory so that ``.env`` and ``logs/`` are found;
its exit code says how the run went (see README.md).
"""

import sys

from analytics_refresh.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))

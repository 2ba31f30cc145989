#!/usr/bin/env python3
"""Refresh every dashboard now, as cron does, and show that each cache was rewritten.

Preflight checklist, a real run (trigger ``manual``) with its progress, a check of every
refreshed cache row and a summary table. Takes the run options of ``analytics-refresh run``
and ``--preflight-only``; exits with the run's code.
"""

import sys

from analytics_refresh.ops.manual import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

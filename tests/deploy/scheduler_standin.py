"""A stand-in for supercronic, for the process-tree test: it behaves as supercronic does.

Usage: python scheduler_standin.py COMMAND

It runs COMMAND at once through /bin/sh -c, as supercronic runs a crontab line when it is
due: in supercronic's own process group (no new session or group). On SIGTERM or SIGINT it
does what supercronic documents (its issue #62): it stops scheduling, does not pass the
signal on, and waits for the running job before it exits 0.
"""

from __future__ import annotations

import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    [command] = argv

    def stop_scheduling(signum, _frame):
        print(f"standin: got {signal.Signals(signum).name}, waiting for jobs", file=sys.stderr)

    signal.signal(signal.SIGTERM, stop_scheduling)
    signal.signal(signal.SIGINT, stop_scheduling)
    job = subprocess.Popen(["/bin/sh", "-c", command])
    code = job.wait()
    print(f"standin: job exited {code}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Client CPU of one bare pooled ``requests`` GET: the yardstick of the runner's own cost.

``python bench/bare_get.py URL COUNT`` sends COUNT GETs one after another on one
``requests.Session`` and prints the process CPU seconds per GET, reading each body as the
runner does.
"""

from __future__ import annotations

import sys
import time

import requests


def main(url: str, count: int) -> None:
    session = requests.Session()
    headers = {"Authorization": "Bearer bench"}
    session.get(url, headers=headers, timeout=30).close()  # connect outside the count
    started = time.process_time()
    for _ in range(count):
        with session.get(url, headers=headers, timeout=30) as response:
            response.content  # noqa: B018 - read the body, as the runner does
    print((time.process_time() - started) / count)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

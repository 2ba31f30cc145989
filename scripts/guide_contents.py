"""Write the guide's table of contents from its headings (run after adding a section).

python scripts/guide_contents.py            # rewrites the list under "## Contents"
python scripts/guide_contents.py --check    # exit 1 when the list is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parent.parent / "ANALYTICS_REFRESH_CRON_GUIDE.md"
START = "## Contents\n\n"


def headings(text: str) -> list[tuple[int, str]]:
    """Return the (level, title) of every ## and ### heading outside code blocks."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"^(##|###) (.+)$", line)
        if match and match[2] != "Contents":
            found.append((len(match[1]), match[2]))
    return found


def anchor(title: str) -> str:
    """Return GitHub's anchor for a heading: lower case, punctuation dropped, - for spaces."""
    text = re.sub(r"[^\w\- ]", "", title.lower())
    return text.replace(" ", "-")


def contents(text: str) -> str:
    lines = [
        f"{'  ' if level == 3 else ''}- [{title.replace('`', '')}](#{anchor(title)})"
        for level, title in headings(text)
    ]
    return START + "\n".join(lines) + "\n\n"


def rewrite(text: str) -> str:
    """Return the guide with its contents list replaced (or added after the title)."""
    if START in text:
        before, rest = text.split(START, 1)
        after = rest[rest.index("\n## ") + 1 :]
    else:
        title, _, after = text.partition("\n\n")
        before = title + "\n\n"
    return before + contents(before + after) + after


def main(argv: list[str]) -> int:
    text = GUIDE.read_text(encoding="utf-8")
    new = rewrite(text)
    if "--check" in argv:
        return 0 if new == text else 1
    GUIDE.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

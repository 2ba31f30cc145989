"""Near-misses of the project's variable names: a typo is named with the name it meant.

A misspelt name is simply another variable to the environment, so without this the
setting is silently left at its default; for ``DATABASE_URL`` that default is a different
database. Any name is compared, not only those with the project's prefixes: ``DATABSE_URL``
and ``REFERSH_CONCURRENCY`` carry none. A name is a near-miss when it is the known one in
another case, or one edit away (two for names of 10 characters or more), an edit being a
letter added, dropped, changed or two letters swapped; that bound keeps unrelated variables
of the machine (``TEST_DATABASE_URL``, ``LOGNAME``) out. In ``.env``, the project's own
file, a known name without its prefix (``SECRET_KEY``, ``CONCURRENCY``) counts too; in the
process environment it would be another program's (Django's ``SECRET_KEY``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping

# Below this length one edit is allowed, from it two.
LONG_NAME = 10
# A first, cheap filter before the edit distance is counted.
SIMILARITY_CUTOFF = 0.75
# A name from .env this long that is a known name without its prefix is taken for it.
UNPREFIXED_LENGTH = 7


def edits(a: str, b: str) -> int:
    """Return the optimal-string-alignment distance: insertions, deletions, substitutions
    and swaps of two neighbouring letters."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, start=1):
            cost = 0 if char_a == char_b else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


def near_miss(name: str, known: Collection[str]) -> str | None:
    """Return the known name ``name`` is a near-miss of, or None."""
    if name in known:
        return None
    upper = name.upper()
    # Two edits change the length by two at most: the rest cannot be near.
    same_size = [k for k in known if abs(len(k) - len(upper)) <= 2]
    candidates = difflib.get_close_matches(upper, same_size, n=5, cutoff=SIMILARITY_CUTOFF)
    best: tuple[int, str] | None = None
    for candidate in candidates:
        allowed = 2 if len(candidate) >= LONG_NAME else 1
        distance = edits(upper, candidate)
        if distance <= allowed and (best is None or distance < best[0]):
            best = (distance, candidate)
    return best[1] if best else None


def unprefixed(name: str, known: Collection[str], prefixes: tuple[str, ...]) -> str | None:
    """Return the known name that is ``name`` with one of ``prefixes`` put back
    (``SECRET_KEY`` for ``API_SECRET_KEY``), or None. Short rests (``DIR``, ``URL``) are
    too common a word to say anything."""
    if len(name) < UNPREFIXED_LENGTH:
        return None
    upper = name.upper()
    return next((p + upper for p in prefixes if p + upper in known), None)


def misspelt(
    environ: Iterable[str],
    known: Collection[str],
    prefixes: tuple[str, ...],
    dotenv: Collection[str] = (),
) -> dict[str, str | None]:
    """Return {unknown name: the known name it resembles, or None} for every name that is a
    near-miss of a known one or carries one of ``prefixes``; for names from ``.env``
    (``dotenv``, the project's own file) also a known name without its prefix."""
    found: dict[str, str | None] = {}
    for name in sorted(environ):
        if name in known:
            continue
        close = near_miss(name, known)
        if close is None and name in dotenv:
            close = unprefixed(name, known, prefixes)
        if close is None and name.startswith(prefixes):
            guesses = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            close = guesses[0] if guesses else None
            found[name] = close
        elif close is not None:
            found[name] = close
    return found


def warnings_for(found: Mapping[str, str | None], origin: Callable[[str], str]) -> tuple[str, ...]:
    """Return one warning per misspelt name, saying where it was set."""
    lines = []
    for name, close in found.items():
        hint = f"did you mean {close}?" if close else "see .env.example for every name"
        lines.append(f"unknown variable {name} is ignored: {hint} (set in {origin(name)})")
    return tuple(lines)

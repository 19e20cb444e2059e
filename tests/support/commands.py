"""The `candidates` command as the tests run it: a subprocess of this Python, as a user runs it."""

from __future__ import annotations

import sys


def candidates_command(*argv) -> list[str]:
    """`candidates ARGV...` as an argv list (`python -m homefeed_cli`); arguments may be Paths or numbers."""
    return [sys.executable, "-m", "homefeed_cli", *map(str, argv)]

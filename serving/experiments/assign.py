"""Which arm a user is in: a salted hash of the user id, the same in every process and after restarts.

The user id and the experiment's salt go through SHA-256 (never Python's `hash`, which changes per
process); the first 8 bytes, as a fraction of 2**64, fall into one arm's slice of [0, 1), the
slices laid out in the order of the arms with their shares as widths. Nothing else (time,
worker, model version) takes part, so a reload or a new replica keeps every user where they were.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Sequence

SCALE = float(1 << 64)


def bucket(salt: str, user_id: str) -> float:
    """The user's point in [0, 1) for this salt."""
    digest = hashlib.sha256(f"{salt}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / SCALE


class Assigner:
    """`arm_of(user_id)` for arms `names` with `shares` (adding up to 1), under `salt`."""

    def __init__(self, salt: str, names: Sequence[str], shares: Sequence[float]):
        if len(names) != len(shares) or not names:
            raise ValueError(f"need one share per arm, got {len(names)} names and {len(shares)} shares")
        self.salt = salt
        self.names = list(names)
        total = sum(shares)
        # Upper edges of each arm's slice; the last is 1 exactly, so rounding never leaves a gap.
        self._edges = [edge / total for edge in itertools.accumulate(shares)]
        self._edges[-1] = 1.0

    def arm_of(self, user_id: str) -> str:
        point = bucket(self.salt, user_id)
        return self.names[min(bisect.bisect_right(self._edges, point), len(self.names) - 1)]

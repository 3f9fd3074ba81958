"""Which workflow ids may have a snapshot: a Bloom filter.

The coordinator asks it before reading KV for a ``workflow.submitted`` event:
"no" is certain (the id was never saved by this process nor listed at start),
so a new workflow costs no KV read; "maybe" (a real hit or a false positive)
falls back to the read. The filter has a fixed size: past its capacity the
false-positive rate rises and more submissions pay the read, nothing more.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable


class KnownIds:
    """A Bloom filter of ids: no false negatives, few false positives."""

    def __init__(self, capacity: int = 1_000_000, error_rate: float = 0.01) -> None:
        if capacity < 1 or not 0 < error_rate < 1:
            raise ValueError("capacity must be positive and error_rate in (0, 1)")
        bits = math.ceil(-capacity * math.log(error_rate) / math.log(2) ** 2)
        self._bits = bytearray((bits + 7) // 8)
        self._size = len(self._bits) * 8
        self._hashes = max(1, round(bits / capacity * math.log(2)))
        self.count = 0
        """How many ids were added (with repeats)."""

    def _positions(self, key: str) -> list[int]:
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        a = int.from_bytes(digest[:8], "little")
        b = int.from_bytes(digest[8:], "little") | 1
        return [(a + i * b) % self._size for i in range(self._hashes)]

    def add(self, key: str) -> None:
        """Remember ``key``."""
        for position in self._positions(key):
            self._bits[position >> 3] |= 1 << (position & 7)
        self.count += 1

    def update(self, keys: Iterable[str]) -> None:
        """Remember every key."""
        for key in keys:
            self.add(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return all(self._bits[p >> 3] & (1 << (p & 7)) for p in self._positions(key))

    @property
    def nbytes(self) -> int:
        """Memory held by the filter's bits."""
        return len(self._bits)


__all__ = ["KnownIds"]

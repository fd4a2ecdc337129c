"""Which worker collects which instance: a stable hash of the instance id modulo the shard count."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            i, n = (int(p) for p in text.split("/"))
        except ValueError:
            raise ValueError(f"shard {text!r} must be i/N, e.g. 0/3") from None
        if n < 1 or not 0 <= i < n:
            raise ValueError(f"shard {text!r}: need 0 <= i < N")
        return cls(i, n)

    def owns(self, instance_id: int) -> bool:
        # Like Prometheus hashmod: md5 of the id, low 8 bytes as an unsigned integer, modulo N.
        digest = hashlib.md5(str(instance_id).encode()).digest()
        return int.from_bytes(digest[8:], "big") % self.count == self.index

"""The rate limiter: keeps samples and inserts of one table within a band.

It holds no lock of its own; the table calls it under the table's lock and
waits on the table's condition, so a blocked side sleeps until the other side
moves instead of polling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rlrings.services.replay.config import RateLimiterConfig


@dataclass
class RateLimiter:
    min_size_to_sample: int = 1
    samples_per_insert: float | None = None
    min_diff: float = -math.inf
    max_diff: float = math.inf
    inserts: int = 0
    samples: int = 0
    discarded: int = 0
    """Items a queue dropped unsampled (too old a policy): they no longer wait to be sampled."""
    insert_wait_seconds: float = field(default=0.0)
    sample_wait_seconds: float = field(default=0.0)

    @classmethod
    def from_config(cls, config: RateLimiterConfig) -> RateLimiter:
        low, high = config.bounds()
        return cls(config.min_size_to_sample, config.samples_per_insert, low, high)

    def _diff(self) -> float:
        return (self.inserts - self.discarded) * (self.samples_per_insert or 0.0) - self.samples

    def can_insert(self, size: int) -> bool:
        """Whether one more item may go in. A chunk of several items goes in
        whole once its first item may, so the band can be overshot by one chunk."""
        if self.samples_per_insert is None or size < self.min_size_to_sample:
            return True
        return self._diff() + self.samples_per_insert <= self.max_diff

    def inserts_to_sample(self, size: int, n: int = 1) -> int:
        """Inserts still needed before ``n`` items may be sampled (0: they may be now): what a
        blocked sampler waits for, in the words of its error."""
        needed = max(0, self.min_size_to_sample - size, 1 - size)
        if self.samples_per_insert is not None:
            short = n - (self._diff() - self.min_diff)
            needed = max(needed, math.ceil(short / self.samples_per_insert) if short > 0 else 0)
        return needed

    def sample_permits(self, size: int) -> int | float:
        """How many items may be sampled now (math.inf when unlimited)."""
        if size < self.min_size_to_sample or size == 0:
            return 0
        if self.samples_per_insert is None:
            return math.inf
        return max(0, math.floor(self._diff() - self.min_diff))

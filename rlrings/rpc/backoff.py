"""One retry schedule for every loop that waits for something to come back.

Idempotent unary and server-streaming calls retry inside gRPC (``rlrings.rpc.client.RETRY_POLICY``);
what gRPC cannot retry for us (a writer's stream that must resend what was not acknowledged,
a follower's watch, a replay shard reaching its Cassandra ring) waits with a :class:`Backoff`.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential delays from ``initial`` to ``maximum`` seconds, each drawn between half and all of
    the step (so that many clients failing together do not retry together); :meth:`reset` after a success."""

    initial: float = 0.1
    maximum: float = 2.0
    multiplier: float = 2.0
    failures: int = field(default=0, init=False)

    def step(self, failures: int) -> float:
        """The undrawn delay after ``failures`` failures in a row (1: ``initial``)."""
        return min(self.maximum, self.initial * self.multiplier ** max(0, failures - 1))

    def next(self) -> float:
        """Counts a failure and draws the delay before the next try."""
        self.failures += 1
        step = self.step(self.failures)
        return random.uniform(step / 2, step)

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Counts a failure and sleeps the next delay, or until ``stop`` is set (then False)."""
        delay = self.next()
        if stop is None:
            time.sleep(delay)
            return True
        return not stop.wait(delay)

    def reset(self) -> None:
        self.failures = 0

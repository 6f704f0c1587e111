"""Item selection strategies: FIFO, LIFO, uniform and prioritized (sum-tree).

Selectors see only slot numbers. The table tells them when slots fill and
empty; they answer which slots to sample and with what probability. All work
is vectorised over a batch with numpy.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class Occupancy:
    """Dense list of occupied slots, for O(1) uniform draws and removals."""

    def __init__(self, capacity: int):
        self.slots = np.empty(capacity, dtype=np.int64)
        self.position = np.full(capacity, -1, dtype=np.int64)
        self.size = 0

    def add(self, slots: np.ndarray) -> None:
        n = len(slots)
        self.slots[self.size : self.size + n] = slots
        self.position[slots] = np.arange(self.size, self.size + n)
        self.size += n

    def remove(self, slots: np.ndarray) -> None:
        for slot in slots.tolist():
            pos = self.position[slot]
            last = self.slots[self.size - 1]
            self.slots[pos] = last
            self.position[last] = pos
            self.position[slot] = -1
            self.size -= 1

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.slots[rng.integers(0, self.size, size=n)]


class SumTree:
    """Binary tree over slot weights whose nodes hold the sum of their leaves.

    Leaves live at ``[capacity, 2 * capacity)`` with the root at 1, so a
    proportional draw is one vectorised walk of ``log2(capacity)`` levels and
    an update rewrites only the ancestors of the changed leaves.
    """

    def __init__(self, capacity: int):
        self.leaves = 1 << max(0, int(capacity - 1).bit_length())
        self.depth = self.leaves.bit_length() - 1
        self.tree = np.zeros(2 * self.leaves, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.tree[1])

    def weights(self, slots: np.ndarray) -> np.ndarray:
        return self.tree[self.leaves + slots]

    def set(self, slots: np.ndarray, weights: np.ndarray) -> None:
        nodes = self.leaves + np.asarray(slots, dtype=np.int64)
        self.tree[nodes] = weights
        nodes = np.unique(nodes >> 1)
        while len(nodes) and nodes[-1] >= 1:
            self.tree[nodes] = self.tree[2 * nodes] + self.tree[2 * nodes + 1]
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes >> 1)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Slots drawn with probability proportional to their weight."""
        targets = rng.random(n) * self.total
        nodes = np.ones(n, dtype=np.int64)
        for _ in range(self.depth):
            left = 2 * nodes
            left_sum = self.tree[left]
            # Go right only into a subtree with weight: rounding near the end
            # of the range must never land on an empty slot.
            right = (targets >= left_sum) & (self.tree[left + 1] > 0)
            targets = np.where(right, targets - left_sum, targets)
            nodes = np.where(right, left + 1, left)
        return nodes - self.leaves


class Selector:
    """Chooses slots to sample. Subclasses keep whatever index they need."""

    name = ""

    def __init__(self, capacity: int, occupancy: Occupancy, order: OrderedDict[int, int]):
        self.occupancy = occupancy
        self.order = order  # key -> slot, oldest first

    def insert(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        pass

    def remove(self, slots: np.ndarray) -> None:
        pass

    def update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        pass

    def select(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Returns (slots, selection probabilities)."""
        raise NotImplementedError


class UniformSelector(Selector):
    name = "uniform"

    def select(self, n, rng):
        size = self.occupancy.size
        return self.occupancy.draw(n, rng), np.full(n, 1.0 / size)


class FifoSelector(Selector):
    """The oldest ``n`` items, in order; the table asks only for as many as it holds."""

    name = "fifo"

    def _ordered(self):
        return iter(self.order.values())

    def select(self, n, rng):
        if n > len(self.order):
            raise ValueError(f"{self.name} selector: {n} items asked of {len(self.order)}")
        return np.fromiter(self._ordered(), dtype=np.int64, count=n), np.ones(n)


class LifoSelector(FifoSelector):
    name = "lifo"

    def _ordered(self):
        return reversed(self.order.values())


class PrioritizedSelector(Selector):
    """Proportional prioritization: P(i) = p_i^alpha / sum_j p_j^alpha."""

    name = "prioritized"

    def __init__(self, capacity, occupancy, order, priority_exponent: float = 0.6):
        super().__init__(capacity, occupancy, order)
        self.exponent = priority_exponent
        self.tree = SumTree(capacity)

    def insert(self, slots, priorities):
        self.tree.set(slots, np.power(priorities, self.exponent))

    def update(self, slots, priorities):
        self.insert(slots, priorities)

    def remove(self, slots):
        self.tree.set(slots, np.zeros(len(slots)))

    def select(self, n, rng):
        total = self.tree.total
        if total <= 0:  # every priority is zero: fall back to uniform
            size = self.occupancy.size
            return self.occupancy.draw(n, rng), np.full(n, 1.0 / size)
        slots = self.tree.draw(n, rng)
        return slots, self.tree.weights(slots) / total


SELECTORS: dict[str, type[Selector]] = {
    cls.name: cls for cls in (UniformSelector, FifoSelector, LifoSelector, PrioritizedSelector)
}

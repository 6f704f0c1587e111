import numpy as np

from rlrings.services.replay.selectors import SumTree


def test_sum_tree_totals_and_updates():
    tree = SumTree(5)
    tree.set(np.array([0, 1, 2, 3, 4]), np.array([1.0, 2.0, 3.0, 4.0, 0.0]))
    assert tree.total == 10.0
    tree.set(np.array([3]), np.array([0.0]))
    assert tree.total == 6.0
    np.testing.assert_array_equal(tree.weights(np.array([0, 2])), [1.0, 3.0])


def test_sum_tree_draws_proportionally_and_never_empty_slots():
    tree = SumTree(7)
    weights = np.array([1.0, 0.0, 3.0, 0.0, 6.0, 0.0, 0.0])
    tree.set(np.arange(7), weights)
    draws = tree.draw(200_000, np.random.default_rng(1))
    counts = np.bincount(draws, minlength=7) / len(draws)
    np.testing.assert_allclose(counts, weights / weights.sum(), atol=0.005)


def test_sum_tree_edge_of_range_lands_on_a_weighted_slot():
    tree = SumTree(4)
    tree.set(np.array([0]), np.array([1e-300]))

    class Top:
        def random(self, n):
            return np.full(n, 1.0 - 1e-16)

    assert tree.draw(3, Top()).tolist() == [0, 0, 0]

import threading
import time

import numpy as np
import pytest

from rlrings.core.errors import DeadlineExceededError, InvalidArgumentError, UnavailableError
from rlrings.services.replay.config import TableConfig
from rlrings.services.replay.store import SnapshotStore
from rlrings.services.replay.table import Table
from tests.helpers import FRAME_SIGNATURE, frames, table_config


def actions(batch):
    return batch.columns["action"][:, 0].tolist()


def test_insert_stores_items_and_sample_returns_copies():
    table = Table(table_config())
    keys, duplicate = table.insert(frames(4))
    assert not duplicate and keys.tolist() == [1, 2, 3, 4] and table.size == 4
    batch = table.sample(8)
    assert batch.columns["obs"].shape == (8, 1, 8, 8, 3)
    assert set(actions(batch)) <= {0, 1, 2, 3}
    batch.columns["action"][:] = 99  # the caller owns its copy
    assert 99 not in actions(table.sample(8))


def test_sequence_length_splits_chunks_into_items():
    table = Table(table_config(sequence_length=4, selector="fifo"))
    table.insert(frames(8))
    batch = table.sample(2)
    assert batch.columns["action"].reshape(2, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(InvalidArgumentError, match="6 steps is not a multiple of the table's sequence length 4"):
        table.insert(frames(6))


def test_fifo_and_lifo_selection_order():
    fifo = Table(table_config(selector="fifo", max_times_sampled=1))
    fifo.insert(frames(5))
    assert actions(fifo.sample(2)) == [0, 1]
    assert actions(fifo.sample(2)) == [2, 3]
    lifo = Table(table_config(selector="lifo"))
    lifo.insert(frames(5))
    assert actions(lifo.sample(2)) == [4, 3]


def test_eviction_fifo_and_lifo_removers():
    table = Table(table_config(max_size=4, selector="fifo"))
    table.insert(frames(3))
    table.insert(frames(3, start=3))
    assert table.size == 4 and table.evicted_items == 2
    assert actions(table.sample(4)) == [2, 3, 4, 5]
    lifo = Table(table_config(max_size=4, selector="fifo", remover="lifo"))
    lifo.insert(frames(4))
    lifo.insert(frames(1, start=4))
    assert actions(lifo.sample(4)) == [0, 1, 2, 4]


def test_max_times_sampled_removes_items():
    table = Table(table_config(selector="uniform", max_times_sampled=2))
    table.insert(frames(1))
    table.sample(1)
    assert table.size == 1
    table.sample(1)
    assert table.size == 0


def test_prioritized_selection_probabilities_and_importance_weights():
    table = Table(table_config(selector="prioritized", priority_exponent=1.0), seed=3)
    table.insert(frames(3), priorities=[1.0, 3.0, 0.0])
    batch = table.sample(20_000, importance_sampling_exponent=1.0)
    share = np.bincount(actions(batch), minlength=3) / 20_000
    np.testing.assert_allclose(share, [0.25, 0.75, 0.0], atol=0.02)
    by_action = dict(zip(actions(batch), batch.probabilities))
    assert by_action[0] == pytest.approx(0.25) and by_action[1] == pytest.approx(0.75)
    # w_i = (N * P(i))^-beta / max w: with N=3, P=(.25,.75): w0=1/.75 -> 1.0, w1=1/2.25 / (1/.75)
    weights = dict(zip(actions(batch), batch.importance_weights))
    assert weights[0] == pytest.approx(1.0) and weights[1] == pytest.approx(0.75 / 2.25)


def test_priority_exponent_and_updates():
    table = Table(table_config(selector="prioritized", priority_exponent=0.5), seed=0)
    keys, _ = table.insert(frames(2), priorities=[1.0, 4.0])
    batch = table.sample(1000)
    probs = dict(zip(actions(batch), batch.probabilities))
    assert probs[1] == pytest.approx(2 / 3)  # sqrt(4) / (sqrt(1) + sqrt(4))
    assert table.update_priorities([int(keys[0]), 12345], [16.0, 1.0]) == (1, 1)
    assert set(np.round(table.sample(1000).probabilities, 6)) == {round(4 / 6, 6), round(2 / 6, 6)}


@pytest.mark.parametrize("priorities", [[-1.0], [float("nan")], [float("inf")], [1.0, 2.0]])
def test_bad_priorities_store_nothing(priorities):
    table = Table(table_config())
    with pytest.raises(InvalidArgumentError, match=r"chunk\.priorities"):
        table.insert(frames(3), priorities=priorities)
    assert table.size == 0


def test_rate_limiter_min_size_blocks_sampling_until_deadline():
    table = Table(table_config(rate_limiter={"min_size_to_sample": 3}))
    table.insert(frames(2))
    start = time.monotonic()
    with pytest.raises(DeadlineExceededError, match="size 2, min_size_to_sample 3"):
        table.sample(1, timeout=0.2)
    assert 0.15 < time.monotonic() - start < 2
    assert table.limiter.samples == 0  # nothing was counted for the failed batch


def test_rate_limiter_wakes_a_blocked_sampler_when_data_arrives():
    table = Table(table_config(rate_limiter={"min_size_to_sample": 3}))
    result = []
    sampler = threading.Thread(target=lambda: result.append(table.sample(2, timeout=10)))
    sampler.start()
    time.sleep(0.1)
    table.insert(frames(3))
    sampler.join(5)
    assert len(result[0].keys) == 2


def test_samples_per_insert_band_blocks_both_sides():
    config = table_config(rate_limiter={"min_size_to_sample": 2, "samples_per_insert": 2.0, "error_buffer": 4.0})
    table = Table(config)
    table.insert(frames(2))  # diff = 4, band is [0, 8]
    table.sample(4, timeout=1)  # diff = 0
    with pytest.raises(DeadlineExceededError):
        table.sample(1, timeout=0.1)
    table.insert(frames(4))  # diff = 8
    blocked = threading.Thread(target=table.insert, args=(frames(1),))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "an insert beyond the band must wait"
    table.sample(2, timeout=1)  # diff = 6, room for one more insert
    blocked.join(5)
    assert not blocked.is_alive() and table.limiter.inserts == 7
    assert table.limiter.insert_wait_seconds > 0.2


def test_queue_blocks_inserts_when_full_and_hands_out_each_item_once():
    table = Table(TableConfig.queue("q", FRAME_SIGNATURE, max_size=4))
    table.insert(frames(4))
    done = threading.Event()
    threading.Thread(target=lambda: (table.insert(frames(1, start=4)), done.set()), daemon=True).start()
    assert not done.wait(0.3)
    assert actions(table.sample(2)) == [0, 1]
    assert done.wait(5)
    assert actions(table.sample(3)) == [2, 3, 4]
    with pytest.raises(DeadlineExceededError):
        table.sample(1, timeout=0.1)


def test_duplicates_by_writer_sequence_are_not_stored_twice():
    table = Table(table_config())
    table.insert(frames(2), writer_id="w", sequence=1)
    keys, duplicate = table.insert(frames(2), writer_id="w", sequence=1)
    assert duplicate and len(keys) == 0 and table.size == 2
    table.insert(frames(2), writer_id="w", sequence=2)
    assert table.size == 4


def test_close_wakes_blocked_calls_with_unavailable():
    table = Table(table_config(rate_limiter={"min_size_to_sample": 5}))
    errors = []

    def sample():
        try:
            table.sample(1)
        except UnavailableError as error:
            errors.append(error)

    thread = threading.Thread(target=sample)
    thread.start()
    time.sleep(0.1)
    table.close()
    thread.join(5)
    assert errors and "shutting down" in str(errors[0])


def test_snapshot_round_trip_keeps_items_order_priorities_and_counters(tmp_path):
    config = table_config(selector="prioritized", max_size=10)
    table = Table(config)
    table.insert(frames(6), priorities=[1, 2, 3, 4, 5, 6], writer_id="w", sequence=7)
    table.sample(3)
    store = SnapshotStore(tmp_path)
    store.save({"t": (table.state(), table.signature)})

    restored = Table(config)
    restored.restore(store.load({"t": restored.signature})["t"])
    assert restored.size == 6 and restored.limiter.samples == 3 and restored.inserted_items == 6
    assert restored.state().keys.tolist() == table.state().keys.tolist()
    np.testing.assert_array_equal(restored.state().columns["obs"], table.state().columns["obs"])
    np.testing.assert_array_equal(restored.state().priorities, [1, 2, 3, 4, 5, 6])
    assert restored.insert(frames(1), writer_id="w", sequence=7)[1], "writer sequences survive a restart"
    assert restored.insert(frames(1))[0].tolist() == [7], "keys continue after the snapshot"


def test_restore_into_a_smaller_table_keeps_the_newest(tmp_path):
    big = Table(table_config(max_size=10, selector="fifo"))
    big.insert(frames(8))
    store = SnapshotStore(tmp_path)
    store.save({"t": (big.state(), big.signature)})
    small = Table(table_config(max_size=5, selector="fifo"))
    assert small.restore(store.load({"t": small.signature})["t"]) == 3
    assert actions(small.sample(5)) == [3, 4, 5, 6, 7]


def test_snapshot_with_another_signature_is_refused(tmp_path):
    from rlrings.core.errors import ConfigError

    table = Table(table_config())
    table.insert(frames(1))
    store = SnapshotStore(tmp_path)
    store.save({"t": (table.state(), table.signature)})
    other = TableConfig(name="t", signature={"obs": {"dtype": "float32", "shape": [4]}})
    with pytest.raises(ConfigError, match=r"tables\.t\.signature"):
        store.load({"t": other.build_signature()})


def test_reserved_keys_hold_the_oldest_key_down_until_placed_or_released():
    table = Table(table_config(max_size=100, selector="fifo", max_times_sampled=1))
    table.insert(frames(4))  # keys 1-4
    first = table.reserve_keys(4)  # 5-8: a chunk on its way to a durable store
    second = table.reserve_keys(4)  # 9-12
    assert table.bookkeeping().unplaced == {5: 4, 9: 4}, "what a durable store's counters do not include yet"
    table.sample(4)  # the queue drains
    assert table.size == 0
    assert table.oldest_key() == 5, "a chunk written but not yet placed must not count as gone"
    chunk = frames(4)
    table.insert_checked(chunk, table.check(chunk)[1], keys=second)
    assert table.oldest_key() == 5 and table.bookkeeping().unplaced == {5: 4}
    table.release_keys(first)  # its write failed
    assert table.oldest_key() == 9
    assert table.bookkeeping().oldest_key == 9 and table.bookkeeping().unplaced == {}

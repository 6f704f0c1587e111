"""Prometheus metrics of the replay tables and of its Cassandra store, read at scrape time.

Reading counters the tables keep anyway costs the insert and sample paths
nothing; names follow ``rlrings_replay_<what>_<unit>``.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from rlrings.services.replay.replay import Replay


class ReplayCollector(Collector):
    def __init__(self, replay: Replay):
        self.replay = replay

    def collect(self):
        labels = ["table"]
        inserted = CounterMetricFamily("rlrings_replay_inserted_items", "Items inserted.", labels=labels)
        inserted_bytes = CounterMetricFamily("rlrings_replay_inserted_bytes", "Bytes inserted.", labels=labels)
        sampled = CounterMetricFamily("rlrings_replay_sampled_items", "Items sampled.", labels=labels)
        sampled_bytes = CounterMetricFamily("rlrings_replay_sampled_bytes", "Bytes sampled.", labels=labels)
        evicted = CounterMetricFamily("rlrings_replay_evicted_items", "Items evicted to make room.", labels=labels)
        stale = CounterMetricFamily(
            "rlrings_replay_stale_items", "Queue items dropped unsampled for max_policy_lag.", labels=labels
        )
        size = GaugeMetricFamily("rlrings_replay_table_size_items", "Items held.", labels=labels)
        capacity = GaugeMetricFamily("rlrings_replay_table_capacity_items", "Items a table can hold.", labels=labels)
        waits = CounterMetricFamily(
            "rlrings_replay_rate_limiter_wait_seconds",
            "Seconds inserts and samples spent blocked by the rate limiter.",
            labels=["table", "side"],
        )
        for name, table in self.replay.tables.items():
            inserted.add_metric([name], table.inserted_items)
            inserted_bytes.add_metric([name], table.inserted_items * table.item_bytes)
            sampled.add_metric([name], table.sampled_items)
            sampled_bytes.add_metric([name], table.sampled_items * table.item_bytes)
            evicted.add_metric([name], table.evicted_items)
            stale.add_metric([name], table.stale_items)
            size.add_metric([name], table.size)
            capacity.add_metric([name], table.capacity)
            waits.add_metric([name, "insert"], table.limiter.insert_wait_seconds)
            waits.add_metric([name, "sample"], table.limiter.sample_wait_seconds)
        yield from (inserted, inserted_bytes, sampled, sampled_bytes, evicted, stale, size, capacity, waits)
        if self.replay.ring is not None:
            yield from self._ring()

    def _ring(self):
        ring = self.replay.ring
        yield GaugeMetricFamily(
            "rlrings_replay_store_ready",
            "1 once the Cassandra ring is connected and the tables rebuilt.",
            value=float(self.replay.ready.is_set()),
        )
        yield GaugeMetricFamily(
            "rlrings_replay_store_pending_writes",
            "Chunks sent to the Cassandra ring and not yet confirmed at the consistency level (the backlog).",
            value=ring.pending_writes,
        )
        yield SummaryMetricFamily(
            "rlrings_replay_store_write_seconds",
            "Seconds from a chunk's write to its confirmation.",
            count_value=ring.writes,
            sum_value=ring.write_seconds,
        )
        yield CounterMetricFamily("rlrings_replay_store_rows", "Rows stored in the ring.", value=ring.written_rows)
        yield CounterMetricFamily(
            "rlrings_replay_store_written_bytes", "Bytes of chunk data stored in the ring.", value=ring.written_bytes
        )
        yield CounterMetricFamily(
            "rlrings_replay_store_retries",
            "Statements the driver's retry policy sent again (a replica's timeout, unavailable replicas, a failed "
            "connection).",
            value=ring.retry_policy.retries,
        )
        yield CounterMetricFamily(
            "rlrings_replay_store_client_retries",
            "Statements sent again after the driver's own timeout or with no node answering.",
            value=ring.client_retries,
        )
        yield CounterMetricFamily(
            "rlrings_replay_store_write_failures",
            "Chunks the ring did not take after every try (not acknowledged).",
            value=ring.write_failures,
        )
        yield CounterMetricFamily(
            "rlrings_replay_store_priority_failures",
            "Batches of updated priorities the ring did not take (memory has them).",
            value=ring.priority_failures,
        )
        older = GaugeMetricFamily(
            "rlrings_replay_older_items", "Items beyond memory, in the ring, that sampling reaches.", labels=["table"]
        )
        for name, items in self.replay.older.items():
            older.add_metric([name], items.items)
        yield older

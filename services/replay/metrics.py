"""Prometheus metrics of the replay tables, read from the tables at scrape time.

Reading counters the tables keep anyway costs the insert and sample paths
nothing; names follow ``rlrings_replay_<what>_<unit>``.
"""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.replay.replay import Replay


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
            size.add_metric([name], table.size)
            capacity.add_metric([name], table.capacity)
            waits.add_metric([name, "insert"], table.limiter.insert_wait_seconds)
            waits.add_metric([name, "sample"], table.limiter.sample_wait_seconds)
        yield from (inserted, inserted_bytes, sampled, sampled_bytes, evicted, size, capacity, waits)

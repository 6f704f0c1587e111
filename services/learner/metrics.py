"""Prometheus metrics of a learner rank, read at scrape time."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from rlrings.services.learner.learner import Learner


class LearnerCollector(Collector):
    def __init__(self, learner: Learner):
        self.learner = learner

    def collect(self):
        learner = self.learner
        updates = CounterMetricFamily("rlrings_learner_updates", "Gradient updates done.")
        updates.add_metric([], learner.step)
        rate = GaugeMetricFamily("rlrings_learner_steps_per_second", "Updates per second, over the last second.")
        rate.add_metric([], learner.steps_per_second())
        version = GaugeMetricFamily("rlrings_learner_published_version", "Newest weights version published.")
        version.add_metric([], learner.published_version)
        lag = GaugeMetricFamily("rlrings_learner_policy_lag_versions", "Published version minus the data's version.")
        lag.add_metric([], learner.policy_lag)
        lag_updates = GaugeMetricFamily(
            "rlrings_learner_policy_lag_updates", "Learner updates since the sampled data's policy was published."
        )
        lag_updates.add_metric([], learner.policy_lag_updates)
        lag_seconds = GaugeMetricFamily(
            "rlrings_learner_policy_lag_seconds", "Seconds since the sampled data's policy was published."
        )
        lag_seconds.add_metric([], learner.policy_lag_seconds)
        wait = CounterMetricFamily("rlrings_learner_replay_wait_seconds", "Time spent waiting for replay batches.")
        wait.add_metric([], learner.replay_wait_seconds)
        losses = GaugeMetricFamily("rlrings_learner_loss", "Latest loss terms.", labels=["term"])
        for name, value in learner.losses.items():
            losses.add_metric([name], value)
        ranks = GaugeMetricFamily("rlrings_learner_ring_ranks", "Ranks in this learner's ring (1: no ring).")
        ranks.add_metric([], learner.ring.size)
        allreduce = CounterMetricFamily(
            "rlrings_learner_allreduce_seconds", "Time this rank waited for gradients to be averaged over the ring."
        )
        allreduce.add_metric([], learner.ring.communication_seconds)
        busy = CounterMetricFamily(
            "rlrings_learner_device_busy_seconds",
            "Device time spent in updates since the training loop started (CUDA events on a GPU, the "
            "updates' wall time on a CPU).",
        )
        busy.add_metric([], learner.device_clock.busy_seconds)
        share = GaugeMetricFamily(
            "rlrings_learner_device_busy_ratio",
            "Share of the time since the training loop started the device spent in updates.",
        )
        share.add_metric([], learner.device_clock.busy_share())
        yield from (updates, rate, version, lag, lag_updates, lag_seconds, wait, losses, ranks, allreduce, busy, share)

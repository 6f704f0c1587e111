"""Prometheus metrics of an actor, read at scrape time."""

from __future__ import annotations

from typing import Any, Protocol

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class Acting(Protocol):
    """What the collector reads of an actor (``rlrings.services.actor.actor.Actor``), which itself
    imports this module for its histogram."""

    config: Any
    env_steps: int
    episode_count: int
    policy_version: int
    writer: Any
    episodes: Any
    achievement_episodes: dict[str, int]
    spec: Any

    def steps_per_second(self) -> float: ...


RETURN_BUCKETS = (-2000, -1000, -500, -200, -100, -50, -20, -10, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50, 100, 200, 300,
                  400, 475, 500, 1000, 2000, 5000, 10000, float("inf"))  # fmt: skip
"""Upper edges of the episode-return buckets: they span the returns of the registry's games,
negative ones (Pendulum, Reacher) included."""


def return_histogram(env: str) -> Histogram:
    """Every episode's return since the actor started, as prometheus_client's own histogram (its
    counts only grow, so ``rate()`` and ``histogram_quantile`` mean what they say); registered on
    the actor's server registry by the server. Its buckets go below 0, so prometheus_client
    leaves out ``_sum`` (OpenMetrics' rule for such histograms): the mean return is the gauge
    ``rlrings_actor_mean_episode_return``."""
    histogram = Histogram(
        "rlrings_actor_episode_return",
        "Returns of every episode since the actor started.",
        ["env"],
        buckets=RETURN_BUCKETS,
        registry=None,
    )
    histogram.labels(env=env)  # exported from the start, at zero
    return histogram


class ActorCollector(Collector):
    def __init__(self, actor: Acting):
        self.actor = actor

    def collect(self):
        actor = self.actor
        env = [actor.config.env]
        steps = CounterMetricFamily("rlrings_actor_env_steps", "Environment steps taken.", labels=["env"])
        steps.add_metric(env, actor.env_steps)
        episodes = CounterMetricFamily("rlrings_actor_episodes", "Episodes finished.", labels=["env"])
        episodes.add_metric(env, actor.episode_count)
        version = GaugeMetricFamily("rlrings_actor_policy_version", "Weights version in use.", labels=["env"])
        version.add_metric(env, actor.policy_version)
        buffered = GaugeMetricFamily("rlrings_actor_buffered_chunks", "Chunks not yet acknowledged by replay.")
        buffered.add_metric([], actor.writer.pending if actor.writer else 0)
        recent = list(actor.episodes)[-100:]
        mean = GaugeMetricFamily(
            "rlrings_actor_mean_episode_return", "Mean return of the last 100 episodes.", labels=["env"]
        )
        mean.add_metric(env, sum(e.episode_return for e in recent) / max(1, len(recent)))
        lengths = GaugeMetricFamily(
            "rlrings_actor_mean_episode_length", "Mean length of recent episodes.", labels=["env"]
        )
        lengths.add_metric(env, sum(e.length for e in recent) / max(1, len(recent)))
        unlocked = CounterMetricFamily(
            "rlrings_actor_achievement_episodes",
            "Episodes in which an achievement was unlocked (Crafter), by achievement.",
            labels=["env", "achievement"],
        )
        for name, count in sorted(actor.achievement_episodes.items()):
            unlocked.add_metric([*env, name], count)
        frames = GaugeMetricFamily(
            "rlrings_actor_frames_per_second",
            "Env frames per second over the last seconds (steps times the env's frame skip: 4 on Atari).",
            labels=["env"],
        )
        frames.add_metric(env, actor.steps_per_second() * actor.spec.frame_skip)
        yield from (steps, episodes, version, buffered, mean, lengths, unlocked, frames)

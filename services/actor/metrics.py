"""Prometheus metrics of an actor, read at scrape time."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from services.actor.actor import Actor

_RETURN_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 200, 300, 400, 475, 500, 1000, float("inf"))


class ActorCollector(Collector):
    def __init__(self, actor: Actor):
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
        recent = list(actor.episodes)
        returns = HistogramMetricFamily(
            "rlrings_actor_episode_return", "Returns of the last 1000 episodes.", labels=["env"]
        )
        returns.add_metric(env, _buckets([e.episode_return for e in recent]), sum(e.episode_return for e in recent))
        lengths = GaugeMetricFamily(
            "rlrings_actor_mean_episode_length", "Mean length of recent episodes.", labels=["env"]
        )
        lengths.add_metric(env, sum(e.length for e in recent[-100:]) / max(1, len(recent[-100:])))
        unlocked = CounterMetricFamily(
            "rlrings_actor_achievement_episodes",
            "Episodes in which an achievement was unlocked (Crafter), by achievement.",
            labels=["env", "achievement"],
        )
        for name, count in sorted(actor.achievement_episodes.items()):
            unlocked.add_metric([*env, name], count)
        yield from (steps, episodes, version, buffered, returns, lengths, unlocked)


def _buckets(values: list[float]) -> list[tuple[str, int]]:
    return [(str(edge) if edge != float("inf") else "+Inf", sum(v <= edge for v in values)) for edge in _RETURN_BUCKETS]

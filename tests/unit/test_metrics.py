"""Metrics that tell the truth: episode returns as a histogram whose counts only grow, and
each process's own figures on every service's registry."""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rlrings.rpc.server import register_process_metrics
from rlrings.services.actor.metrics import return_histogram


def test_return_buckets_are_prometheus_clients_own_cumulative_and_only_grow():
    registry = CollectorRegistry()
    histogram = return_histogram("CartPole-v1")
    registry.register(histogram)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert families["rlrings_actor_episode_return"].type == "histogram", "exported at zero before any episode"
    seen = []
    for value in (-150.0, -3.2, 0.0, 21.0, 500.0, 9e9):
        histogram.labels(env="CartPole-v1").observe(value)
        families = text_string_to_metric_families(generate_latest(registry).decode())
        family = next(f for f in families if f.name == "rlrings_actor_episode_return")
        seen.append({(s.name, s.labels.get("le")): s.value for s in family.samples})
    final = seen[-1]
    bucket = "rlrings_actor_episode_return_bucket"
    assert final[(bucket, "+Inf")] == 6 == final[("rlrings_actor_episode_return_count", None)]
    # prometheus_client leaves _sum out of a histogram with negative buckets (OpenMetrics' rule);
    # the mean return is a gauge of its own (rlrings_actor_mean_episode_return)
    assert ("rlrings_actor_episode_return_sum", None) not in final
    assert final[(bucket, "-200.0")] == 0 and final[(bucket, "-100.0")] == 1 and final[(bucket, "0.0")] == 3
    assert final[(bucket, "500.0")] == 5 and final[(bucket, "10000.0")] == 5
    for before, after in zip(seen, seen[1:]):
        assert all(after[key] >= count for key, count in before.items()), "counts only grow"


def test_every_registry_carries_the_process_figures():
    registry = CollectorRegistry()
    register_process_metrics(registry)
    text = generate_latest(registry).decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "process_threads"):
        assert f"\n{name} " in text or text.startswith(f"{name} ") or f"# TYPE {name} " in text, name
    threads = registry.get_sample_value("process_threads")
    assert threads is not None and threads >= 1
    assert registry.get_sample_value("process_resident_memory_bytes") > 10_000_000

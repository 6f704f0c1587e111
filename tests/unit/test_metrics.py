"""Metrics that tell the truth: episode returns as a histogram whose counts only grow, and
each process's own figures on every service's registry."""

import math

from prometheus_client import CollectorRegistry, generate_latest

from rlrings.server import register_process_metrics
from rlrings.services.actor.metrics import ReturnHistogram


def test_return_buckets_are_cumulative_and_only_grow():
    histogram = ReturnHistogram()
    seen = []
    for value in (-150.0, -3.2, 0.0, 21.0, 500.0, 9e9, math.nan):
        histogram.observe(value)
        seen.append(dict(histogram.buckets()))
    final = seen[-1]
    assert final["+Inf"] == 6 and histogram.sum == -150.0 - 3.2 + 21.0 + 500.0 + 9e9, "NaN is left out"
    assert final["-200.0"] == 0 and final["-100.0"] == 1 and final["-2.0"] == 2 and final["0.0"] == 3
    assert final["20.0"] == 3 and final["50.0"] == 4 and final["500.0"] == 5 and final["10000.0"] == 5
    counts = [list(dict(b).values()) for b in seen]
    assert all(c == sorted(c) for c in counts), "cumulative: each bucket holds the ones below it"
    assert all(all(a <= b for a, b in zip(x, y, strict=True)) for x, y in zip(counts, counts[1:])), "only grow"


def test_every_registry_carries_the_process_figures():
    registry = CollectorRegistry()
    register_process_metrics(registry)
    text = generate_latest(registry).decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "process_threads"):
        assert f"\n{name} " in text or text.startswith(f"{name} ") or f"# TYPE {name} " in text, name
    threads = registry.get_sample_value("process_threads")
    assert threads is not None and threads >= 1
    assert registry.get_sample_value("process_resident_memory_bytes") > 10_000_000

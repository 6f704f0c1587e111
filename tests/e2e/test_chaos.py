"""The fault-injection suite, short (``make chaos`` runs it longer, with a learner ring):
``kill -9`` of each service of a training mesh in turn, on the embedded store; and the
load harness of ``make load``, briefly."""

import json

import pytest
from rich.console import Console

from bench import chaos
from rlrings.mesh import MeshConfig

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(600)
def test_each_service_survives_kill_9_and_nothing_acknowledged_is_lost(tmp_path):
    config = MeshConfig(actors=2, envs_per_actor=4, checkpoint_every=20, max_seconds=3600, max_env_steps=0,
                        target_return=1e9, run_dir=tmp_path / "mesh")  # fmt: skip
    plot = tmp_path / "chaos.png"
    results = chaos.run(config, None, settle=3, timeout=90, console=Console(width=160), plot=plot)
    reports = {kill["service"]: kill for kill in results["kills"]}
    assert list(reports) == ["actor-0", "replay", "learner", "parameter", "viewer"]
    for report in reports.values():
        assert report["probe_items_lost"] == 0, report  # no checkpoint: the acknowledgement log keeps them
        assert report["seconds_until_back"] is not None, report
        assert report["seconds_until_training_progresses"] is not None, report
        assert report["other_restarts"] == [], report  # nobody else crashed
    assert 0 <= reports["learner"]["learner_steps_lost"] <= 20  # at most one checkpoint interval
    assert reports["viewer"]["probe_items_acknowledged"] == 5 * 64
    assert results["passed"]
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_the_load_harness_runs_short_and_counts_no_errors(tmp_path):
    """`make load` runs 5 minutes per service; this keeps the harness working (8 s, fewer clients)."""
    from bench import load

    out = tmp_path / "load.json"
    argv = ["--seconds", "8", "--writers", "8", "--samplers", "2", "--idle-streams", "40", "--watchers", "8",
            "--out", str(out)]  # fmt: skip
    assert load.main(argv) == 0
    results = json.loads(out.read_text())
    assert results["replay"]["errors"] == 0 and results["replay"]["chunks_acknowledged"] > 0
    assert results["replay"]["idle_streams"] == 40 and results["replay"]["info_latency_ms"]["p99"] > 0
    assert results["replay"]["insert_latency_ms"]["p99"] >= results["replay"]["insert_latency_ms"]["p50"] > 0
    assert results["parameter"]["errors"] == 0 and results["parameter"]["versions_published"] >= 4
    assert results["parameter"]["watchers_that_saw_every_version"] == 8
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"

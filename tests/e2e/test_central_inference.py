"""rlrings up with central inference: actors step envs in groups and ask an inference service for
their actions; the run solves CartPole as the local one does."""

import json
import time
import urllib.request

import pytest

from tests.e2e.helpers import children_named, finish, scrape_every_service, up

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def passes(port: int) -> float:
    """Forward passes the inference service has run (0 before it answers)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    counts = [line.split()[-1] for line in text.splitlines() if line.startswith("rlrings_inference_batch_size_count")]
    return float(counts[0]) if counts else 0.0


def test_rlrings_up_with_central_inference_solves_cartpole(tmp_path):
    process = up(tmp_path, "--inference", "central", "--no-viewer", "--max-seconds", "240")
    deadline = time.monotonic() + 90
    while not (tmp_path / "configs" / "inference.yaml").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    inference = json.loads((tmp_path / "configs" / "inference.yaml").read_text())
    while passes(inference["metrics_port"]) == 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert children_named(process.pid, "rlrings.services.inference"), "an inference service beside the learner"
    scrapes = scrape_every_service(tmp_path, ("replay", "parameter", "learner", "inference", "actor-0", "actor-1"))
    assert "rlrings_inference_latency_seconds_bucket" in scrapes["inference"]
    assert "rlrings_actor_frames_per_second" in scrapes["actor-0"]
    summary, output = finish(process, tmp_path)
    assert summary["solved"], summary
    for index in range(2):
        actor = json.loads((tmp_path / "configs" / f"actor-{index}.yaml").read_text())
        assert actor["inference_address"] == f"127.0.0.1:{inference['port']}"
        assert "Traceback" not in (tmp_path / "logs" / f"actor-{index}.log").read_text()
    assert passes(inference["metrics_port"]) == 0, "the inference service stopped with the run"

"""``rlrings experiment fewshot`` end to end, tiny: real worker processes, a real
parameter service, interrupted with Ctrl-C and resumed."""

import json
import signal
import subprocess
import sys
import time

import pytest

from rlrings.clients.parameter import ParameterClient
from rlrings.core.models import Policy, build_model, load_weights
from rlrings.rpc import wire
from rlrings.rpc.config import load_config
from rlrings.services.parameter.config import ParameterConfig
from rlrings.services.parameter.server import ParameterServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TINY = ["--family", "cartpole", "--methods", "scratch,pretrain,reptile,bc", "--shots", "1,5", "--seeds", "2",
        "--test-tasks", "2", "--meta-env-steps", "8000", "--eval-episodes", "3", "--workers", "2"]  # fmt: skip
JOBS = 4 + 4 * 2 * 2 * 2  # trainings (2 methods x 2 seeds) + adaptations (methods x seeds x tasks x K)


def fewshot(out, *extra):
    return [sys.executable, "-m", "rlrings.ops.cli", "experiment", "fewshot", *TINY, "--out", str(out), *extra]


def job_ids(out):
    path = out / "jobs.jsonl"
    return [json.loads(line)["job"] for line in path.read_text().splitlines()] if path.exists() else []


def test_a_tiny_experiment_is_interrupted_resumed_and_reported(tmp_path):
    out = tmp_path / "fewshot"
    first = subprocess.Popen(fewshot(out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while len(job_ids(out)) < 8 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.1)
    first.send_signal(signal.SIGINT)
    output, _ = first.communicate(timeout=60)
    done_before = job_ids(out)
    assert first.returncode == 130, output
    assert "run the same command to resume" in " ".join(output.split())  # (the console wraps lines)
    assert 8 <= len(done_before) < JOBS

    changed = subprocess.run(fewshot(out, "--eval-episodes", "4"), capture_output=True, text=True, timeout=60)
    assert changed.returncode == 2 and "other settings (eval_episodes)" in changed.stdout + changed.stderr

    second = subprocess.run(fewshot(out), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{len(done_before)} of {JOBS} jobs already done" in " ".join(second.stdout.split())
    ids = job_ids(out)
    assert len(ids) == len(set(ids)) == JOBS  # nothing ran twice, nothing is missing
    assert ids[: len(done_before)] == done_before

    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"scratch", "pretrain", "reptile", "bc"}
    for method, row in results["methods"].items():
        for k in ("1", "5"):
            stat = row["after_adaptation"][k]
            assert stat["n"] == 2 and stat["low"] <= stat["mean"] <= stat["high"], (method, k, stat)
    # five expert demonstrations clone a policy far better than five episodes teach a random one
    assert results["methods"]["bc"]["after_adaptation"]["5"]["mean"] > 400
    assert results["methods"]["scratch"]["after_adaptation"]["5"]["mean"] < 200
    assert "| bc |" in (out / "results.md").read_text()
    assert (out / "fewshot.png").read_bytes()[:4] == b"\x89PNG"

    # the trained initialisations stay downloadable from the experiment's parameter store
    server = ParameterServer(
        load_config(ParameterConfig, [], port=0, metrics_port=0, directory=out / "parameters")
    ).start()
    try:
        with ParameterClient(server.address) as client:
            header, data = client.fetch(tag="fewshot/fewshot/reptile/s1")
        spec = wire.model_spec_from_proto(header.model)
        model = build_model(spec)
        load_weights(model, data)
        assert spec.env_id.startswith("task:cartpole/") and header.learner_step >= 8000
        Policy(spec, model).save(tmp_path / "reptile.pt")
        assert Policy.load(tmp_path / "reptile.pt").act([0.0, 0.0, 0.01, 0.0]) in (0, 1)
    finally:
        server.stop(grace=0)


def test_shards_share_a_directory_and_a_running_parameter_service(tmp_path):
    """The cluster's shape: copies of the command as shards (an Indexed Job's pods) with
    the stack's parameter service; the last shard to finish reports every job."""
    out = tmp_path / "shared"
    server = ParameterServer(
        load_config(ParameterConfig, [], port=0, metrics_port=0, directory=tmp_path / "stack-weights")
    ).start()
    try:
        shared = ["--workers", "1", "--shards", "2", "--parameter-address", server.address]
        shards = [
            subprocess.Popen(
                fewshot(out, *shared, "--shard-index", str(i)),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
            for i in range(2)
        ]
        outputs = [shard.communicate(timeout=300)[0] for shard in shards]
        assert [shard.returncode for shard in shards] == [0, 0], outputs
        with ParameterClient(server.address) as client:
            tags = dict(client.list().tags)
    finally:
        server.stop(grace=0)
    assert {tag for tag in tags if tag.startswith("fewshot/")} == {
        f"fewshot/shared/{method}/s{seed}" for method in ("pretrain", "reptile") for seed in (0, 1)
    }
    files = sorted(path.name for path in out.glob("jobs*.jsonl"))
    assert files == ["jobs-0-of-2.jsonl", "jobs-1-of-2.jsonl"]
    ids = [json.loads(line)["job"] for name in files for line in (out / name).read_text().splitlines()]
    assert len(ids) == len(set(ids)) == JOBS
    results = json.loads((out / "results.json").read_text())
    assert all(row["after_adaptation"]["5"]["n"] == 2 for row in results["methods"].values())

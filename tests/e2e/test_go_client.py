"""A client in a second language, generated from protos/ alone (Go, with the standard
protoc-gen-go and protoc-gen-go-grpc), uploads experience to a real replay server and
downloads a model from a real parameter service: the contract needs nothing of Python."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rlrings.clients.parameter import ParameterClient
from rlrings.clients.replay import ReplayClient
from rlrings.core.models import ModelSpec, build_model, load_weights, weights_to_bytes
from rlrings.envs import env_spec
from rlrings.rpc import wire

pytestmark = [pytest.mark.e2e]
CLIENT = Path(__file__).resolve().parents[2] / "clients" / "go"
GO = shutil.which("go")

PENDULUM_TRANSITIONS = {
    "obs": {"dtype": "float32", "shape": [3]},
    "action": {"dtype": "float32", "shape": [1], "low": [-2.0], "high": [2.0]},
    "reward": {"dtype": "float32"},
    "terminated": {"dtype": "bool"},
}


@pytest.fixture(scope="module")
def go_client(tmp_path_factory):
    """The client built from clients/go (its generated code is checked by make check-protos)."""
    binary = tmp_path_factory.mktemp("go") / "rlrings-client"
    subprocess.run([GO, "build", "-o", str(binary), "./cmd/rlrings-client"], cwd=CLIENT, check=True, timeout=600,
                   env={**os.environ, "GOFLAGS": "-mod=readonly"})  # fmt: skip
    return binary


@pytest.mark.skipif(GO is None, reason="needs the go toolchain (make tools uses it too)")
def test_a_go_client_uploads_experience_and_downloads_a_model(go_client, start_replay, start_parameter, tmp_path):
    replay = start_replay([{"name": "experience", "signature": PENDULUM_TRANSITIONS, "max_size": 10_000}])
    parameter = start_parameter()
    spec = ModelSpec.for_env(env_spec("Pendulum-v1"), "sac")
    weights = weights_to_bytes(build_model(spec))
    with ParameterClient(parameter.address) as client:
        version = client.publish(weights, wire.model_spec_to_proto(spec))
    out = tmp_path / "model.pt"
    result = subprocess.run(
        [str(go_client), "-replay", replay.address, "-table", "experience", "-chunks", "8", "-steps", "32",
         "-resend-last", "-parameter", parameter.address, "-out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # the resent chunk (same writer id and sequence) was acknowledged as a duplicate, stored once
    assert report["chunks_acked"] == 9 and report["duplicates"] == 1 and report["items_stored"] == 8 * 32
    with ReplayClient(replay.address) as client:
        assert client.info(["experience"])["experience"].inserted_items == 8 * 32
        (batch,) = client.sample("experience", batch_size=64, num_batches=1, timeout=10)
    actions = batch.columns["action"]
    assert actions.dtype == np.float32 and np.all(np.abs(actions) <= 2.0)
    assert batch.columns["obs"].shape == (64, 1, 3) and batch.columns["terminated"].dtype == np.bool_
    data = out.read_bytes()
    assert data == weights and report["model_sha256"] == hashlib.sha256(weights).hexdigest()
    assert (report["model_version"], report["architecture"], report["env_id"]) == (version, "mlp", "Pendulum-v1")
    load_weights(build_model(spec), data)  # the downloaded bytes rebuild the published model


@pytest.mark.skipif(GO is None, reason="needs the go toolchain (make tools uses it too)")
def test_a_go_game_server_asks_the_inference_service_for_actions(go_client, start_replay, start_parameter, tmp_path):
    from rlrings.rpc.config import load_config
    from rlrings.services.inference.config import InferenceConfig
    from rlrings.services.inference.server import InferenceServer

    replay = start_replay([{"name": "experience", "signature": PENDULUM_TRANSITIONS, "max_size": 10_000}])
    parameter = start_parameter()
    spec = ModelSpec.for_env(env_spec("CartPole-v1"), "appo")
    with ParameterClient(parameter.address) as client:
        pinned = client.publish(weights_to_bytes(build_model(spec)), wire.model_spec_to_proto(spec), tags=["release"])
        client.publish(weights_to_bytes(build_model(spec)), wire.model_spec_to_proto(spec))
    inference = InferenceServer(load_config(InferenceConfig, [], port=0, metrics_port=0, device="cpu",
                                            parameter_address=parameter.address)).start()  # fmt: skip
    try:
        result = subprocess.run(
            [str(go_client), "-replay", replay.address, "-table", "experience", "-chunks", "1", "-steps", "8",
             "-parameter", parameter.address, "-out", str(tmp_path / "model.pt"), "-inference", inference.address,
             "-tag", "release", "-observations", "5"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        inference.stop(grace=0)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # CartPole's two logits for each of the 5 observations, from the pinned version, not the newest
    assert (report["act_version"], report["act_policy_shape"], report["act_values"]) == (pinned, [5, 2], 5)


@pytest.mark.skipif(GO is None, reason="needs the go toolchain (make tools uses it too)")
def test_the_docs_go_commands_build_and_run_the_client(start_replay, start_parameter, tmp_path):
    """The game clients page's two lines, as written but for the addresses: the build in clients/go
    (through a link, so the binary and the model land in this test's directory's view of it, and are
    removed after) and a run that uploads and downloads."""
    from tests.helpers import run_shell_snippet

    replay = start_replay([{"name": "experience", "signature": PENDULUM_TRANSITIONS, "max_size": 10_000}])
    parameter = start_parameter()
    spec = ModelSpec.for_env(env_spec("Pendulum-v1"), "sac")
    weights = weights_to_bytes(build_model(spec))
    with ParameterClient(parameter.address) as client:
        client.publish(weights, wire.model_spec_to_proto(spec))
    built, model = CLIENT / "rlrings-client", CLIENT / "model.pt"
    assert not built.exists() and not model.exists(), "a file the test would write is in the checkout already"
    (tmp_path / "clients").symlink_to(CLIENT.parent)
    try:
        result = run_shell_snippet(
            "go-client", tmp_path, env={"GOFLAGS": "-mod=readonly"}, timeout=600,
            substitute={"127.0.0.1:8000": replay.address, "127.0.0.1:8001": parameter.address},
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["items_stored"] > 0 and model.read_bytes() == weights
    finally:
        built.unlink(missing_ok=True)
        model.unlink(missing_ok=True)
    with ReplayClient(replay.address) as client:
        assert client.info(["experience"])["experience"].inserted_items == report["items_stored"]

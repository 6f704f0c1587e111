"""The actor against a real replay server, and models pulled for use outside the mesh."""

import subprocess
import sys

import gymnasium as gym
import pytest

from rlrings.config import load_config
from rlrings.envs import env_spec
from rlrings.models import ModelSpec, Policy, build_model, weights_to_bytes
from rlrings.parameter_client import ParameterClient
from services.parameter.config import ParameterConfig
from services.parameter.server import ParameterServer

pytestmark = pytest.mark.service


def test_actor_refuses_a_table_its_env_cannot_fill(start_replay):
    image_table = {
        "name": "experience",
        "signature": {"obs": {"dtype": "uint8", "shape": [64, 64, 3]}, "action": {"dtype": "int32"}},
        "max_size": 100,
    }
    server = start_replay([image_table])
    result = subprocess.run(
        [sys.executable, "-m", "services.actor", "--replay-address", server.address, "--env", "CartPole-v1",
         "--port", "0", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "table 'experience' cannot take CartPole-v1 experience" in result.stderr
    assert "column 'obs'" in result.stderr


def test_models_pull_gives_a_policy_for_a_plain_game_loop(tmp_path):
    config = load_config(ParameterConfig, [], port=0, metrics_port=0, directory=tmp_path / "weights")
    server = ParameterServer(config).start()
    try:
        spec = ModelSpec.for_env(env_spec("CartPole-v1"), "impala")
        model = build_model(spec)
        with ParameterClient(server.address) as client:
            client.publish(weights_to_bytes(model), spec.to_proto(), learner_step=42)
        out = tmp_path / "model.pt"
        result = subprocess.run(
            [sys.executable, "-m", "rlrings.cli", "models", "pull", "--address", server.address, "--out", str(out)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "version 1 (mlp for CartPole-v1, 2 actions, learner step 42)" in result.stdout
    finally:
        server.stop(grace=0)

    # The README's snippet: act with the pulled model in a plain Gymnasium loop.
    policy = Policy.load(out)
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    done, steps = False, 0
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
        done, steps = terminated or truncated, steps + 1
    assert steps > 0 and policy.version == 1 and policy.spec == spec
    for name, tensor in model.state_dict().items():
        assert (policy.model.state_dict()[name] == tensor).all()


def test_models_pull_reports_a_missing_model(tmp_path):
    config = load_config(ParameterConfig, [], port=0, metrics_port=0, directory=tmp_path / "empty")
    server = ParameterServer(config).start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "rlrings.cli", "models", "pull", "--address", server.address, "--tag", "best"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
    finally:
        server.stop(grace=0)
    assert result.returncode == 1 and "'best' points at no version" in result.stdout

"""The actor against a real replay server, and models pulled for use outside the mesh."""

import subprocess
import sys

import gymnasium as gym
import pytest

from rlrings.clients.parameter import ParameterClient
from rlrings.core.models import ModelSpec, Policy, build_model, weights_to_bytes
from rlrings.envs import env_spec
from rlrings.ops.processes import free_port
from rlrings.rpc import wire
from rlrings.rpc.config import load_config
from rlrings.services.parameter.config import ParameterConfig
from rlrings.services.parameter.server import ParameterServer

pytestmark = pytest.mark.service


def test_actor_refuses_a_table_its_env_cannot_fill(start_replay):
    image_table = {
        "name": "experience",
        "signature": {"obs": {"dtype": "uint8", "shape": [64, 64, 3]}, "action": {"dtype": "int32"}},
        "max_size": 100,
    }
    server = start_replay([image_table])
    result = subprocess.run(
        [sys.executable, "-m", "rlrings.services.actor", "--replay-address", server.address, "--env", "CartPole-v1",
         "--port", "0", "--metrics-port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "table 'experience' cannot take CartPole-v1 experience" in result.stderr
    assert "column 'obs'" in result.stderr


def models_pull(address: str, out) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "rlrings.ops.cli", "models", "pull", "--address", address, "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_models_pull_gives_a_policy_for_a_plain_game_loop(tmp_path):
    config = load_config(ParameterConfig, [], port=0, metrics_port=0, directory=tmp_path / "weights")
    server = ParameterServer(config).start()
    try:
        spec = ModelSpec.for_env(env_spec("CartPole-v1"), "impala")
        model = build_model(spec)
        with ParameterClient(server.address) as client:
            client.publish(weights_to_bytes(model), wire.model_spec_to_proto(spec), learner_step=42)
        out = tmp_path / "model.pt"
        result = models_pull(server.address, out)
        assert "version 1 (mlp for CartPole-v1, actions Discrete(2), learner step 42)" in result.stdout
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
            [sys.executable, "-m", "rlrings.ops.cli", "models", "pull", "--address", server.address, "--tag", "best"],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
    finally:
        server.stop(grace=0)
    assert result.returncode == 1 and "'best' points at no version" in result.stderr, "errors go to stderr"
    assert not (tmp_path / "model.pt").exists()


def test_a_box_action_model_keeps_its_bounds_and_acts_within_them(tmp_path):
    """Pendulum's torque is a Box in [-2, 2]: the bounds travel with the published weights,
    and the pulled policy's actions (mode and samples) stay inside them."""
    config = load_config(ParameterConfig, [], port=0, metrics_port=0, directory=tmp_path / "weights")
    server = ParameterServer(config).start()
    try:
        spec = ModelSpec.for_env(env_spec("Pendulum-v1"), "ppo")
        with ParameterClient(server.address) as client:
            client.publish(weights_to_bytes(build_model(spec)), wire.model_spec_to_proto(spec), learner_step=1)
            header, _ = client.fetch()
        out = tmp_path / "model.pt"
        result = models_pull(server.address, out)
        assert "actions Box(shape=(1,), dtype=float32)" in result.stdout
    finally:
        server.stop(grace=0)
    assert list(header.model.action_space.box.low) == [-2.0] and header.model.distribution == "gaussian"
    policy = Policy.load(out)
    assert policy.spec == spec
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=0)
    for greedy in (True, False):
        for _ in range(50):
            action = policy.act(obs, greedy=greedy)
            assert action.shape == (1,) and -2.0 <= float(action[0]) <= 2.0
            obs, *_ = env.step(action)


def test_actor_refuses_a_published_model_for_another_env(start_replay, tmp_path):
    from rlrings.algorithms.impala import ImpalaConfig
    from rlrings.core import experience

    replay = start_replay(experience.replay_tables(ImpalaConfig(), env_spec("CartPole-v1"), experience.TablePlan()))
    config = load_config(ParameterConfig, [], port=0, metrics_port=0, directory=tmp_path / "weights")
    parameter = ParameterServer(config).start()
    try:
        spec = ModelSpec.for_env(env_spec("Acrobot-v1"), "impala")  # 6 observations, 3 actions
        with ParameterClient(parameter.address) as client:
            client.publish(weights_to_bytes(build_model(spec)), wire.model_spec_to_proto(spec), learner_step=1)
        result = subprocess.run(
            [sys.executable, "-m", "rlrings.services.actor", "--replay-address", replay.address, "--parameter-address",
             parameter.address, "--env", "CartPole-v1", "--port", "0", "--metrics-port", "0"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        parameter.stop(grace=0)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "env: the published model is for Acrobot-v1 (observations (6,), actions Discrete(3))" in result.stderr


def test_an_algorithm_refuses_an_action_space_it_does_not_support():
    result = subprocess.run(
        [sys.executable, "-m", "rlrings.services.learner", "--env", "Pendulum-v1", "--algorithm", "dqn", "--port", "0",
         "--metrics-port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "algorithm: dqn supports Discrete actions; env 'Pendulum-v1' has Box(shape=(1,), dtype=float32)" in (
        result.stderr
    )


def test_the_viewer_plays_a_continuous_env_from_keys_and_says_why_another_cannot_be_played():
    from rlrings.core.errors import FailedPreconditionError
    from rlrings.services.viewer.config import ViewerConfig
    from rlrings.services.viewer.viewer import Viewer

    nothing = f"127.0.0.1:{free_port()}"  # no service there: the page works before any weights arrive
    config = load_config(ViewerConfig, [], env="Pendulum-v1", replay_address=nothing, parameter_address=nothing)
    viewer = Viewer(config)
    try:
        session = viewer.open("Pendulum-v1", "play")
        session.key("ArrowRight", down=True)
        frames = [session.tick() for _ in range(3)]
        assert [f.action_values for f in frames] == [(0.4,), (0.8,), (1.2,)]  # ramping towards 2
        session.key("ArrowRight", down=False)
        assert session.tick().action_values == (0.4,)  # eased back towards 0 when released
        session.steps.clear()  # nothing to record: no replay here
        session.steps.update({k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")})
        session.close()
        watched = viewer.open("Pendulum-v1", "watch")
        assert [watched.tick().step for _ in range(3)] == [1, 2, 3]
        watched.close()
    finally:
        viewer.close()
    config = load_config(ViewerConfig, [], env="Pusher-v5", replay_address=nothing, parameter_address=nothing)
    viewer = Viewer(config)
    try:
        with pytest.raises(FailedPreconditionError, match=r"play needs a key map: .*7 action elements"):
            viewer.open("Pusher-v5", "play")
    finally:
        viewer.close()


def test_a_viewer_session_closed_during_a_tick_waits_for_it_and_refuses_the_next():
    """The page's socket closes while its tick still runs in an executor thread: the close must not
    pull the env from under the step (nor record a half-written step), and later ticks are refused."""
    import threading
    import time

    from rlrings.core.errors import FailedPreconditionError
    from rlrings.services.viewer.config import ViewerConfig
    from rlrings.services.viewer.viewer import Viewer

    nothing = f"127.0.0.1:{free_port()}"
    viewer = Viewer(load_config(ViewerConfig, [], env="CartPole-v1", replay_address=nothing, parameter_address=nothing))
    try:
        session = viewer.open("CartPole-v1", "watch")
        step, events = session.env.step, []

        def slow_step(action):
            events.append("step begins")
            time.sleep(0.3)
            events.append("step ends")
            return step(action)

        session.env.step = slow_step
        ticking = threading.Thread(target=session.tick)
        ticking.start()
        time.sleep(0.1)  # the tick is inside the env's step
        session.close()
        events.append("closed")
        ticking.join()
        assert events == ["step begins", "step ends", "closed"], events
        with pytest.raises(FailedPreconditionError, match="the session is closed"):
            session.tick()
        assert viewer.open_sessions["watch"] == 0, "the slot came back once"
    finally:
        viewer.close()

"""Demonstrations: behaviour cloning reproduces a scripted demonstrator, and
DQN batches can mix demonstrations in."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrings.algorithms.dqn import DqnConfig
from rlrings.algorithms.impala import ImpalaConfig
from rlrings.clients.replay import ReplayClient
from rlrings.core import experience
from rlrings.envs import env_spec
from rlrings.rpc.config import load_config
from rlrings.services.learner.config import LearnerConfig
from rlrings.services.learner.learner import Learner
from rlrings.services.learner.prefetch import DeviceBatches

pytestmark = pytest.mark.service


def scripted(obs: np.ndarray) -> int:
    """A CartPole controller that balances: push toward where the pole falls."""
    return int(obs[2] + 0.5 * obs[3] > 0)


def scripted_episodes(episodes: int, seed: int = 0) -> dict[str, np.ndarray]:
    env = gym.make("CartPole-v1")
    steps = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            action = scripted(obs)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            for name, value in zip(steps, (obs, action, reward, next_obs, terminated, truncated)):
                steps[name].append(value)
            obs, done = next_obs, terminated or truncated
    types = {"obs": np.float32, "action": np.int32, "reward": np.float32, "next_obs": np.float32,
             "terminated": bool, "truncated": bool}  # fmt: skip
    return {name: np.asarray(values, dtype=types[name]) for name, values in steps.items()}


@pytest.fixture
def demo_mesh(start_replay, tmp_path):
    from rlrings.services.parameter.config import ParameterConfig
    from rlrings.services.parameter.server import ParameterServer

    spec = env_spec("CartPole-v1")
    transitions = experience.table_config(DqnConfig(capacity=10_000), spec)
    transitions["rate_limiter"] = {"min_size_to_sample": 1}  # the test inserts only a few
    replay = start_replay([transitions, experience.demonstrations_table(spec)])
    parameter = ParameterServer(
        load_config(ParameterConfig, [], port=0, metrics_port=0, directory=tmp_path / "weights")
    ).start()
    demos = scripted_episodes(4)
    with ReplayClient(replay.address) as client, client.writer("demonstrations", chunk_length=64) as writer:
        for start in range(0, len(demos["action"]), 64):
            writer.write_chunk({name: value[start : start + 64] for name, value in demos.items()})
    yield replay, parameter, demos
    parameter.stop(grace=0)


def learner_for(replay, parameter, tmp_path, **settings):
    config = load_config(
        LearnerConfig, [], port=0, metrics_port=0, replay_address=replay.address,
        parameter_address=parameter.server.address, checkpoint_dir=tmp_path / "ckpt", tensorboard_dir=None,
        batch_size=64, **settings,
    )  # fmt: skip
    return Learner(config)


def test_behaviour_cloning_reproduces_the_scripted_demonstrator(demo_mesh, tmp_path):
    replay, parameter, demos = demo_mesh
    torch.manual_seed(0)
    learner = learner_for(
        replay, parameter, tmp_path, algorithm={"name": "impala", "learning_rate": 3e-3, "bc_pretrain_updates": 1500}
    )
    stats = learner.pretrain()
    assert stats["bc_loss"] < 0.5 and stats["bc_accuracy"] > 0.8  # one batch of 64: a noisy figure
    # On states the demonstrator meets in new episodes, the clone mostly does what it would do ...
    fresh = scripted_episodes(3, seed=100)
    with torch.no_grad():
        chosen = learner.model(torch.from_numpy(fresh["obs"]))[0].argmax(-1).numpy()
    agreement = (chosen == fresh["action"]).mean()
    assert agreement > 0.9, agreement
    # ... and balances the pole about as well.
    env, returns = gym.make("CartPole-v1"), []
    for seed in range(3):
        obs, _ = env.reset(seed=200 + seed)
        total, done = 0.0, False
        while not done:
            with torch.no_grad():
                action = int(learner.model(torch.from_numpy(obs[None]))[0].argmax())
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + reward, terminated or truncated
        returns.append(total)
    assert np.mean(returns) >= 300, returns
    learner.close()


def test_dqn_batches_mix_in_demonstrations(demo_mesh, tmp_path):
    replay, parameter, demos = demo_mesh
    learner = learner_for(replay, parameter, tmp_path, algorithm={"name": "dqn", "demo_fraction": 0.25})
    (source,) = learner.sources  # what dqn declares: 16 of each batch's 64 from the demonstrations
    assert (source.table, source.per_update, source.pretrain_updates) == ("demonstrations", 16, 0)
    demonstrations = learner._mixed_in(source)
    assert demonstrations["obs"].shape == (16, 1, 4) and demonstrations["action"].shape == (16, 1)
    columns = {name: torch.zeros(64, 1, *value.shape[2:]) for name, value in demonstrations.items()}
    columns["discount"] = torch.zeros(64, 1)
    mixed, weights = source.join(
        {k: columns[k] for k in ("obs", "action", "reward", "next_obs", "discount")}, torch.ones(64), demonstrations
    )
    assert mixed["obs"].shape == (80, 1, 4) and weights.shape == (80,)
    discount = mixed["discount"][64:].numpy()
    assert np.all(np.isclose(discount, 0.0) | np.isclose(discount, 0.99))
    # A whole update: 64 sampled transitions plus 16 demonstration steps; priorities go back for the 64.
    with ReplayClient(replay.address) as client:
        client.insert(
            "experience",
            {"obs": demos["obs"][:64], "action": demos["action"][:64], "reward": demos["reward"][:64],
             "next_obs": demos["next_obs"][:64], "discount": np.full(64, 0.99, np.float32)},
        )  # fmt: skip
        batch = next(
            iter(
                client.sample("experience", batch_size=64, num_batches=1, importance_sampling_exponent=0.4, timeout=30)
            )
        )
    stats = learner._update(next(iter(DeviceBatches([batch], learner.device))))
    assert learner.step == 1 and "td_abs" in stats
    learner.close()


def test_bc_without_a_demonstrations_table_is_a_config_error(start_replay, tmp_path):
    from rlrings.core.errors import ConfigError
    from rlrings.services.parameter.config import ParameterConfig
    from rlrings.services.parameter.server import ParameterServer

    replay = start_replay([experience.table_config(ImpalaConfig(queue_size=100), env_spec("CartPole-v1"))])
    parameter = ParameterServer(
        load_config(ParameterConfig, [], port=0, metrics_port=0, directory=tmp_path / "weights")
    ).start()
    try:
        learner = learner_for(replay, parameter, tmp_path, algorithm={"name": "ppo", "bc_pretrain_updates": 10})
        with pytest.raises(
            ConfigError,
            match=r"demonstrations_table: replay has no table 'demonstrations', which ppo draws from "
            r"\(pretrain_updates 10\)",
        ):
            learner.run()
        learner.close()
    finally:
        parameter.stop(grace=0)


def test_the_learner_resumes_from_its_checkpoint(demo_mesh, tmp_path):
    replay, parameter, _ = demo_mesh
    first = learner_for(replay, parameter, tmp_path, algorithm="dqn")
    first.step = 37
    with torch.no_grad():
        first.model.policy.linear.bias.fill_(0.25)
    first.checkpoint()
    first.close()
    second = learner_for(replay, parameter, tmp_path, algorithm="dqn")
    assert second.step == 37 and second.learning.updates == 37
    assert torch.all(second.model.policy.linear.bias == 0.25)
    assert torch.all(second.learning.target.policy.linear.bias == first.learning.target.policy.linear.bias)
    second.close()

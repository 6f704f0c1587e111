"""An actor's envs in groups, its policy here or on an inference service: every env's steps reach
replay once each, in order, with its episodes' endings and final observations where they belong."""

from __future__ import annotations

import threading
import time

import gymnasium as gym
import numpy as np
import pytest

from rlrings import algorithms
from rlrings.clients.parameter import ParameterClient
from rlrings.clients.replay import ReplayClient
from rlrings.core import experience
from rlrings.core.models import build_model, weights_to_bytes
from rlrings.core.shape import MeshShape
from rlrings.envs import env_spec
from rlrings.rpc import wire
from rlrings.rpc.config import load_config
from rlrings.services.actor.actor import Actor, group_sizes
from rlrings.services.actor.config import ActorConfig
from rlrings.services.inference.config import InferenceConfig
from rlrings.services.inference.server import InferenceServer

pytestmark = pytest.mark.service

ENV = "rlrings-test/Counting-v0"
UNROLL = 4


class Counting(gym.Env):
    """Observations ``[id, t]``: the id is the seed of its first reset, t counts the episode's steps.
    Even ids end (terminated) at t = 5, odd ids are cut by a time limit (truncated) at t = 7."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode=None):
        self.id, self.t = -1, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.id = seed
        self.t = 0
        return np.array([self.id, 0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.id % 2 == 0 and self.t == 5
        truncated = self.id % 2 == 1 and self.t == 7
        return np.array([self.id, self.t], np.float32), 1.0, terminated, truncated, {}


gym.register(ENV, entry_point=Counting)


def actor_config(algorithm: str, inference: str, groups: int, replay, parameter) -> tuple[ActorConfig, object]:
    """An actor of 6 counting envs in ``groups`` groups, its policy here or on an inference service
    started for it (returned, to stop; None for local)."""
    server = None
    extra = {}
    if inference == "central":
        server = InferenceServer(load_config(InferenceConfig, [], port=0, metrics_port=0, device="cpu",
                                             parameter_address=parameter.address)).start()  # fmt: skip
        extra = {"inference_address": server.address}
    config = load_config(ActorConfig, [], port=0, metrics_port=0, replay_address=replay.address,
                         parameter_address=parameter.address, env=ENV, num_envs=6, env_groups=groups, seed=100,
                         algorithm={"name": algorithm, "unroll_length": UNROLL}, **extra)  # fmt: skip
    return config, server


def appo_replay_and_weights(env: str, envs: int, start_replay, start_parameter):
    """Replay with APPO's tables for one actor of ``envs`` envs (writers never wait) and a parameter
    service with a first APPO model of ``env`` published."""
    spec = env_spec(env)
    settings = algorithms.get("appo").config(unroll_length=UNROLL, queue_size=1000)
    replay = start_replay(experience.mesh_tables(settings, spec, MeshShape(actors=1, envs_per_actor=envs)))
    parameter = start_parameter()
    model_spec = algorithms.get("appo").model_spec(spec, config=settings)
    with ParameterClient(parameter.address).wait_ready(10) as client:
        client.publish(weights_to_bytes(build_model(model_spec)), wire.model_spec_to_proto(model_spec))
    return replay, parameter


def run_until_written(actor: Actor, replay, items: int):
    """Runs ``actor`` until replay holds ``items`` unrolls (or 60 s), stops it, and returns every
    unroll written, as one batch, and how many."""
    actor.connect()
    thread = threading.Thread(target=actor.run, daemon=True)
    thread.start()
    with ReplayClient(replay.address) as reader:
        deadline = time.monotonic() + 60
        while reader.info(["experience"])["experience"].size < items and time.monotonic() < deadline:
            time.sleep(0.05)
        actor.stopped.set()
        thread.join(30)
        actor.writer.flush(30)
        size = reader.info(["experience"])["experience"].size
        return next(iter(reader.sample("experience", batch_size=size, num_batches=1))), size


def test_group_sizes_share_the_envs_out_evenly():
    assert group_sizes(8, 1) == [8] and group_sizes(8, 2) == [4, 4] and group_sizes(7, 3) == [3, 2, 2]


@pytest.mark.parametrize(("inference", "groups"), [("local", 1), ("local", 2), ("central", 2), ("central", 3)])
def test_every_envs_steps_arrive_once_in_order_with_endings_and_final_observations(
    inference, groups, start_replay, start_parameter
):
    replay, parameter = appo_replay_and_weights(ENV, 6, start_replay, start_parameter)
    config, server = actor_config("appo", inference, groups, replay, parameter)
    actor = Actor(config)
    try:
        batch, size = run_until_written(actor, replay, 30)
    finally:
        actor.close()
        if server is not None:
            server.stop(grace=0)
    obs, final = batch.columns["obs"], batch.columns["final_obs"]
    terminated, truncated = batch.columns["terminated"], batch.columns["truncated"]
    by_env: dict[int, list[int]] = {}
    for item in range(size):
        by_env.setdefault(int(obs[item, 0, 0]), []).append(item)
    assert sorted(by_env) == list(range(100, 106)), "every env, each under its own seed, none twice"
    for env, items in by_env.items():
        for previous, item in zip(items, items[1:], strict=False):  # unrolls chain: no step lost or repeated
            assert np.array_equal(obs[previous, UNROLL], obs[item, 0]), (env, obs[previous], obs[item])
        for item in items:
            for t in range(UNROLL):
                now, after = obs[item, t, 1], obs[item, t + 1, 1]
                assert obs[item, t + 1, 0] == env
                if terminated[item, t]:
                    assert (env % 2, now, after) == (0, 4, 0) and not final[item, t].any()
                elif truncated[item, t]:
                    assert (env % 2, now, after) == (1, 6, 0) and final[item, t].tolist() == [env, 7]
                else:
                    assert after == now + 1 and not final[item, t].any()
    assert actor.env_steps >= size * UNROLL


@pytest.mark.parametrize(("inference", "groups"), [("local", 1), ("local", 2), ("central", 2)])
def test_an_on_policy_actor_steps_each_unroll_with_the_policy_trained_on_the_last(
    inference, groups, start_replay, start_parameter
):
    """PPO's actor writes one unroll of every env, then waits: for replay to take them, and for a
    version newer than the one that stepped them. The learner (played here by the test) so trains
    on a batch of exactly the policy it is updating, and nothing is stepped while it does."""
    spec = env_spec(ENV)
    settings = algorithms.get("ppo").config(unroll_length=UNROLL)
    replay = start_replay(experience.mesh_tables(settings, spec, MeshShape(actors=1, envs_per_actor=6, batch_size=6)))
    parameter = start_parameter()
    model_spec = algorithms.get("ppo").model_spec(spec, config=settings)
    publisher = ParameterClient(parameter.address).wait_ready(10)

    def publish() -> int:
        return publisher.publish(weights_to_bytes(build_model(model_spec)), wire.model_spec_to_proto(model_spec))

    version = publish()
    config, server = actor_config("ppo", inference, groups, replay, parameter)
    assert config.on_policy, "ppo's actors are on-policy unless told otherwise"
    actor = Actor(config)
    actor.connect()
    thread = threading.Thread(target=actor.run, daemon=True)
    thread.start()
    try:
        with ReplayClient(replay.address) as reader, reader.sample("experience", batch_size=6) as batches:
            for _ in range(4):
                batch = next(batches)  # one unroll of every env: a whole batch
                assert set(batch.policy_versions.tolist()) == {version}, (batch.policy_versions, version)
                # nothing more is stepped until the learner has a new version out
                time.sleep(0.5)
                steps = actor.env_steps
                time.sleep(0.5)
                assert actor.env_steps == steps and reader.info(["experience"])["experience"].size == 0
                version = publish()
    finally:
        actor.stopped.set()  # what closing does first: an actor waiting for a version ends its loop
        thread.join(30)
        actor.close()
        publisher.close()
        if server is not None:
            server.stop(grace=0)
    assert not thread.is_alive(), "a stopped actor waiting for a version ends its loop"


@pytest.mark.parametrize("env", ["ALE/Pong-v5", "ALE/Pong-v5?vector=wrappers"])
def test_atari_groups_write_each_envs_steps_in_order(env, start_replay, start_parameter):
    """Atari actors in two groups, through ale-py's C++ vector env and through the wrappers. Within
    every unroll written, each frame stack is the one before moved on by one frame (or a new
    episode's first frame four times), so no step of an env was lost, repeated or mixed with
    another env's; every step the actor counted arrives, but for unrolls still under way."""
    replay, parameter = appo_replay_and_weights(env, 4, start_replay, start_parameter)
    config = load_config(ActorConfig, [], port=0, metrics_port=0, replay_address=replay.address,
                         parameter_address=parameter.address, env=env, num_envs=4, env_groups=2, seed=7,
                         env_threads=1, algorithm={"name": "appo", "unroll_length": UNROLL})  # fmt: skip
    actor = Actor(config)
    try:
        batch, size = run_until_written(actor, replay, 60)
    finally:
        actor.close()
    assert [type(group.envs).__name__ for group in actor.groups] == 2 * [
        "SyncVectorEnv" if "wrappers" in env else "AleVector"
    ]
    assert all(getattr(group.envs, "threads", 1) == 1 for group in actor.groups)  # the actor's env_threads
    obs, ended = batch.columns["obs"], batch.columns["terminated"] | batch.columns["truncated"]
    assert size >= 60 and 0 <= actor.env_steps - size * UNROLL < 4 * UNROLL  # (an unroll under way is not written)
    for item in range(size):
        for t in range(UNROLL):
            after = obs[item, t + 1]
            if ended[item, t]:
                assert all(np.array_equal(after[..., 0], after[..., k]) for k in range(1, 4))
            else:
                assert np.array_equal(after[..., :3], obs[item, t][..., 1:]), (item, t)

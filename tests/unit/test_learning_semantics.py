"""Replay semantics and schedules that learning depends on: queues that lose nothing
and repeat nothing, stale items dropped, new items at the running max priority,
exploration and importance-sampling schedules, the learner's own bootstrap of
truncated episodes."""

import threading

import numpy as np
import pytest
import torch

from rlrings.algorithms.dqn import DqnActing, DqnConfig, DqnLearning
from rlrings.algorithms.impala import ImpalaConfig, ImpalaLearning
from rlrings.core.errors import ConfigError, DeadlineExceededError, InvalidArgumentError
from rlrings.core.models import ModelSpec, build_model
from rlrings.envs import env_spec
from rlrings.mesh import Mesh, MeshConfig
from rlrings.mesh.evaluation import play
from rlrings.services.replay.config import TableConfig
from rlrings.services.replay.table import Table
from tests.helpers import FRAME_SIGNATURE, frames, table_config


def actions(batch):
    return batch.columns["action"][:, 0].tolist()


def test_a_full_queue_holds_a_whole_chunk_back_instead_of_evicting_unsampled_items():
    table = Table(TableConfig.queue("q", FRAME_SIGNATURE, max_size=6))
    table.insert(frames(4))
    done = threading.Event()
    # 4 + 3 > 6: before, the chunk went in on its first item's permit and evicted item 0 unseen
    threading.Thread(target=lambda: (table.insert(frames(3, start=4)), done.set()), daemon=True).start()
    assert not done.wait(0.3), "the chunk must wait for room"
    assert actions(table.sample(1)) == [0]
    assert done.wait(5)
    assert actions(table.sample(6)) == [1, 2, 3, 4, 5, 6]
    assert table.evicted_items == 0 and table.inserted_items == table.sampled_items == 7


def test_a_batch_never_holds_the_same_item_twice_it_waits_for_distinct_ones():
    table = Table(TableConfig.queue("q", FRAME_SIGNATURE, max_size=10))
    table.insert(frames(2))
    with pytest.raises(DeadlineExceededError):
        table.sample(3, timeout=0.2)  # before: [0, 1, 0], padded with a repeat
    assert table.size == 2 and table.sampled_items == 0, "nothing was taken by the batch that waited"
    result = []
    waiter = threading.Thread(target=lambda: result.append(table.sample(3, timeout=10)))
    waiter.start()
    table.insert(frames(1, start=2))
    waiter.join(5)
    assert actions(result[0]) == [0, 1, 2]
    fifo = Table(table_config(selector="fifo"))  # a FIFO table that keeps its items does not repeat either
    fifo.insert(frames(2))
    with pytest.raises(DeadlineExceededError):
        fifo.sample(3, timeout=0.1)


def test_a_queue_refuses_a_batch_larger_than_it_can_ever_hold():
    table = Table(TableConfig.queue("q", FRAME_SIGNATURE, max_size=4))
    with pytest.raises(InvalidArgumentError, match="batch_size: 5 distinct items .* holds 4"):
        table.sample(5)


def test_max_policy_lag_drops_stale_items_and_counts_them():
    table = Table(TableConfig.queue("q", FRAME_SIGNATURE, max_size=10, max_policy_lag=2))
    table.insert(frames(2), policy_version=1)
    table.insert(frames(2, start=2), policy_version=4)
    table.insert(frames(2, start=4), policy_version=5)
    batch = table.sample(3, policy_version=6)  # 6 - 2 = 4: version 1 is too old
    assert actions(batch) == [2, 3, 4] and batch.policy_versions.tolist() == [4, 4, 5]
    assert table.stale_items == 2 and table.size == 1
    assert table.limiter.sample_permits(table.size) == 1, "dropped items no longer count as waiting"
    with pytest.raises(ValueError, match="max_policy_lag"):
        table_config(selector="uniform", max_policy_lag=3)


def test_items_inserted_without_priority_get_the_running_max():
    table = Table(table_config(selector="prioritized", priority_exponent=1.0))
    keys, _ = table.insert(frames(2))
    table.update_priorities(keys.tolist(), [7.0, 0.5])
    new, _ = table.insert(frames(1, start=2))
    probabilities = dict(zip(*np.unique(table.sample(4000).keys, return_counts=True)))
    assert table.max_priority == 7.0
    # priorities 7, 0.5, 7 (the new item at the running max, not at 1)
    assert probabilities[new[0]] / 4000 == pytest.approx(7 / 14.5, abs=0.04)


def test_dqn_exploration_spreads_across_actors_and_anneals_from_one(tmp_path):
    from rlrings.mesh.plan import effective

    def epsilons(actors):
        mesh = Mesh(MeshConfig(algorithm="dqn", actors=actors, run_dir=tmp_path / str(actors), viewer=False))
        return [effective(actor).algorithm.epsilon for actor in mesh.actors]

    assert epsilons(2) == pytest.approx([0.1, 0.01]), "neither of two actors is almost greedy"
    many = epsilons(256)
    assert many == sorted(many, reverse=True) and min(many) >= 0.01 and max(many) <= 0.1
    spec = env_spec("CartPole-v1")
    config = DqnConfig(epsilon=0.1, epsilon_start=1.0, epsilon_decay_steps=1000)
    acting = DqnActing(config, spec, ModelSpec.for_env(spec, "dqn"), num_envs=1, seed=0)
    schedule = []
    for steps in (0, 500, 1000, 5000):
        acting.env_steps = steps
        schedule.append(acting.epsilon())
    assert schedule == pytest.approx([1.0, 0.55, 0.1, 0.1])


def test_importance_sampling_exponent_rises_to_one():
    spec = ModelSpec.for_env(env_spec("CartPole-v1"), "dqn")
    config = DqnConfig(importance_sampling_exponent=0.4, importance_sampling_anneal_updates=100)
    learning = DqnLearning(config, spec, build_model(spec))
    betas = []
    for updates in (0, 50, 100, 1000):
        learning.updates = updates
        betas.append(learning.importance_sampling_exponent())
    assert betas == pytest.approx([0.4, 0.7, 1.0, 1.0])


def test_a_queue_too_small_for_a_batch_and_a_write_is_refused_at_start(tmp_path):
    with pytest.raises(ConfigError, match="queue_size: 20 .* at least 23"):
        Mesh(MeshConfig(algorithm={"name": "impala", "queue_size": 20}, run_dir=tmp_path, viewer=False))


def _trajectory(truncated: bool, final_value_obs: float) -> dict[str, torch.Tensor]:
    steps = 4
    obs = torch.zeros(1, steps + 1, 4)
    columns = {
        "obs": obs,
        "action": torch.zeros(1, steps + 1, dtype=torch.int32),
        "reward": torch.ones(1, steps + 1),
        "terminated": torch.zeros(1, steps + 1, dtype=torch.bool),
        "truncated": torch.zeros(1, steps + 1, dtype=torch.bool),
        "logp": torch.full((1, steps + 1), float(np.log(0.5))),
        "final_obs": torch.zeros(1, steps + 1, 4),
    }
    columns["truncated"][0, 1] = truncated
    columns["final_obs"][0, 1] = final_value_obs
    return columns


def test_truncated_steps_bootstrap_from_the_learners_own_value_of_the_final_observation():
    torch.manual_seed(0)
    spec = ModelSpec.for_env(env_spec("CartPole-v1"), "impala")
    learner = ImpalaLearning(ImpalaConfig(normalize_returns=False), spec, build_model(spec))  # the loss alone, no stats
    losses = {
        (cut, x): float(learner.loss(_trajectory(cut, x))[1]["baseline_loss"]) for cut in (True, False) for x in (0, 3)
    }
    assert losses[(True, 0.0)] != losses[(True, 3.0)], "the final observation's value enters the target"
    assert losses[(False, 0.0)] == losses[(False, 3.0)], "and only where the episode was cut"


def test_return_normalizer_tracks_the_targets_scale_and_the_learner_checkpoints_it():
    from rlrings.algorithms.trajectories import ReturnNormalizer

    normalizer = ReturnNormalizer(decay=0.9)
    assert [float(x) for x in normalizer.stats()] == [0.0, 1.0]
    rng = np.random.default_rng(0)
    for _ in range(200):
        normalizer.update(torch.as_tensor(rng.normal(100.0, 20.0, 512)))
    mean, std = normalizer.stats()
    assert float(mean) == pytest.approx(100.0, abs=2) and float(std) == pytest.approx(20.0, abs=2)
    spec = ModelSpec.for_env(env_spec("CartPole-v1"), "impala")
    learner = ImpalaLearning(ImpalaConfig(), spec, build_model(spec))
    assert set(learner.modules()) == {"model", "return_normalizer"}
    learner.update(_trajectory(False, 0.0))
    assert float(learner.normalizer.weight) > 0


def test_learning_rate_falls_linearly_to_zero_over_the_budget():
    spec = ModelSpec.for_env(env_spec("CartPole-v1"), "impala")
    learner = ImpalaLearning(ImpalaConfig(learning_rate=1e-3, learning_rate_decay_updates=4), spec, build_model(spec))
    rates = [learner.update(_trajectory(False, 0.0)).stats["learning_rate"] for _ in range(5)]
    assert rates == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4, 0.0])


def test_evaluation_plays_exactly_the_episodes_asked_each_env_its_share():
    spec = ModelSpec.for_env(env_spec("CartPole-v1"), "impala")
    returns = play(build_model(spec).eval(), spec, "CartPole-v1", episodes=7, seed=3, greedy=False, max_envs=3)
    assert len(returns) == 7 and all(r >= 1 for r in returns)


def test_a_queue_restored_with_fewer_items_than_its_counters_say_neither_deadlocks_nor_repeats():
    """A queue rebuilt from a ring keeps only the newest items that fit in memory: the rest
    will never be sampled, so the limiter must not count them as waiting."""
    full = Table(TableConfig.queue("q", FRAME_SIGNATURE, max_size=40))
    full.insert(frames(40))
    state = full.state()
    state.counters = {**state.counters, "inserts": 3000, "inserted_items": 3000, "next_key": 3001}
    queue = Table(TableConfig.queue("q", FRAME_SIGNATURE, max_size=8))
    queue.restore(state)  # 8 of the 40 fit; the counters say 3000 went in
    assert queue.size == 8 and queue.limiter.sample_permits(queue.size) == 8
    assert len(queue.sample(8, timeout=1).keys) == 8
    inserter = threading.Thread(target=queue.insert, args=(frames(4, start=100),), daemon=True)
    inserter.start()
    inserter.join(5)
    assert not inserter.is_alive(), "the insert was held back by items the queue will never see"
    assert actions(queue.sample(4, timeout=1)) == [100, 101, 102, 103]


def test_the_mesh_plan_is_a_pure_function_of_its_settings(tmp_path):
    """What the supervisor starts, read without starting anything: the learner and each actor get the
    settings the user gave and the mesh's shape, and derive the same algorithm from them (the step
    budget sets the learner's learning-rate decay); replay derives its tables."""
    from rlrings.mesh import plan
    from rlrings.services.actor.config import ActorConfig
    from rlrings.services.learner.config import LearnerConfig
    from rlrings.services.replay.config import ReplayConfig

    config = MeshConfig(algorithm={"name": "ppo", "epochs": 3}, actors=3, max_env_steps=512_000, viewer=False)
    services = {s.name: s.config for s in plan(config, env_spec("CartPole-v1"), tmp_path)}
    assert sorted(services) == ["actor-0", "actor-1", "actor-2", "learner", "parameter", "replay"]
    assert services["learner"]["algorithm"] == {"name": "ppo", "epochs": 3}  # what was given, and no more
    learner = LearnerConfig(**services["learner"]).algorithm
    assert learner.name == "ppo" and learner.epochs == 3
    assert learner.learning_rate_decay_updates == 512_000 // (16 * 32)
    for i in range(3):
        acting = ActorConfig(**services[f"actor-{i}"]).algorithm
        assert acting.model_dump() == learner.model_dump() | {"learning_rate_decay_updates": 0}
    assert ReplayConfig(**services["replay"]).tables[0].max_size == 16 + 8 - 1  # on-policy: one batch
    assert not (tmp_path / "logs").exists(), "nothing was started"


def test_on_policy_ppo_gets_fresh_data_buffers_and_the_rest_keep_theirs():
    """PPO's actors wait for each new version, so its learner publishes after every update and draws
    one batch ahead; a publish_every that would leave its actors waiting for a version never made is
    refused. The asynchronous algorithms keep their buffers."""
    from rlrings.services.actor.config import ActorConfig
    from rlrings.services.learner.config import LearnerConfig

    ppo, appo = ({"name": "ppo"}, {"name": "appo"})
    learner = LearnerConfig(algorithm=ppo)
    assert (learner.publish_every, learner.prefetch) == (1, 1) and ActorConfig(algorithm=ppo).on_policy
    learner = LearnerConfig(algorithm=appo)
    assert (learner.publish_every, learner.prefetch) == (5, 2) and not ActorConfig(algorithm=appo).on_policy
    assert not ActorConfig(algorithm=ppo, on_policy=False).on_policy, "a user may still run ppo's actors ahead"
    with pytest.raises(ValueError, match="publish_every: ppo is on-policy: its actors wait for a new version"):
        LearnerConfig(algorithm=ppo, publish_every=5)


def test_an_on_policy_mesh_whose_actors_cannot_fill_an_update_is_refused(tmp_path):
    """PPO's envs step one unroll per version each; a ring of learners wanting more per update than
    that would wait for ever, so the plan (and a replay pod, which derives the same tables) refuses."""
    with pytest.raises(ConfigError, match=r"batch_size: ppo is on-policy: each of its 16 envs \(2 actors x 8\)"):
        Mesh(MeshConfig(algorithm="ppo", learners=2, run_dir=tmp_path, viewer=False))
    Mesh(MeshConfig(algorithm="ppo", learners=2, batch_size=8, run_dir=tmp_path, viewer=False))  # 2 x 8 fits
    Mesh(MeshConfig(algorithm="appo", learners=2, run_dir=tmp_path, viewer=False))  # asynchronous: no such limit


def test_the_device_clock_counts_the_updates_time_and_nothing_else():
    import time

    import torch

    from rlrings.services.learner.device_clock import DeviceClock

    clock = DeviceClock(torch.device("cpu"))
    clock.start()
    time.sleep(0.05)  # an update
    clock.stop()
    busy = clock.busy_seconds
    assert busy >= 0.05
    time.sleep(0.05)  # waiting for the next batch: not counted
    assert clock.busy_seconds == busy and 0 < clock.busy_share() < 1
    clock.restart()
    assert clock.busy_seconds == 0 and clock.busy_share() == 0

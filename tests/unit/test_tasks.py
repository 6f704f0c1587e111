"""Few-shot task families (rlrings/envs/tasks.py): fixed disjoint splits, task ids any
actor can run, physics that really vary, and rewards for one achievement only."""

import numpy as np
import pytest

from rlrings.envs import env_spec, make_env, make_vector_env, tasks
from rlrings.errors import ConfigError


@pytest.mark.parametrize("name", tasks.FAMILIES)
def test_each_family_splits_its_tasks_into_disjoint_training_and_test_tasks(name):
    family = tasks.family(name)
    train = {task.name for task in family.train}
    test = {task.name for task in family.test}
    assert train and test and not train & test
    assert tasks.family(name).test == family.test, "the split is fixed"
    for task in (*family.train, *family.test):
        assert task.env_id == f"task:{name}/{task.name}"
        assert family.task(task.name) == task


def test_cartpole_test_tasks_have_a_longer_pole_than_any_training_task():
    family = tasks.family("cartpole")
    assert (len(family.train), len(family.test)) == (27, 9)
    assert min(t.variation["length"] for t in family.test) > max(t.variation["length"] for t in family.train)
    assert family.reward_threshold == 475.0  # rlrings up stops there, as on CartPole-v1


def test_a_cartpole_task_runs_with_its_own_physics():
    env = make_env("task:cartpole/l1.5-m0.3-f14")
    physics = tasks.physics_of(env)
    assert physics["length"] == 1.5 and physics["masspole"] == 0.3 and physics["force_mag"] == 14.0
    assert physics["total_mass"] == pytest.approx(1.3) and physics["polemass_length"] == pytest.approx(0.45)

    def trajectory(env_id):
        env = make_env(env_id)
        obs, _ = env.reset(seed=7)
        states = [obs]
        for _ in range(5):  # short of the pole falling
            obs, _, terminated, *_ = env.step(1)
            assert not terminated
            states.append(obs)
        return np.array(states)

    short, long = trajectory("task:cartpole/l0.25-m0.1-f10"), trajectory("task:cartpole/l1-m0.1-f10")
    assert np.allclose(short[0], long[0]), "same start"
    assert not np.allclose(short[-1], long[-1]), "a longer pole moves differently under the same pushes"
    assert env_spec("task:cartpole/l1.5-m0.3-f14").action_space.n == 2
    vector = make_vector_env("task:cartpole/l1.5-m0.3-f14", num_envs=2, seed=0)  # how actors run it
    assert tasks.physics_of(vector.envs[1])["length"] == 1.5


def test_a_crafter_task_pays_for_its_achievement_and_nothing_else():
    def run(env_id):
        env = make_env(env_id)
        env.reset(seed=3)
        rng = np.random.default_rng(0)
        rewards, counts = [], []
        for _ in range(200):  # a random walk here wakes up at step 52 and collects wood at step 109
            _, reward, terminated, truncated, info = env.step(int(rng.integers(17)))
            rewards.append(reward)
            counts.append(dict(info["achievements"]))
        return np.array(rewards), counts

    rewards, counts = run("task:crafter/collect_wood")
    wood = np.diff([0] + [c["collect_wood"] for c in counts])
    assert wood.sum() >= 1, "the walk collects wood"
    assert np.array_equal(rewards, (wood > 0).astype(float)), "paid exactly when wood is collected"
    rewards, counts = run("task:crafter/place_table")
    assert counts[-1]["wake_up"] >= 1 and rewards.sum() == 0, "other achievements pay nothing"


def test_bad_task_ids_name_what_exists():
    with pytest.raises(ConfigError, match="no task 'l9'.*l0.25-m0.05-f7"):
        make_env("task:cartpole/l9")
    with pytest.raises(ConfigError, match="unknown task family 'atari'"):
        make_env("task:atari/pong")
    with pytest.raises(ConfigError, match="not a task id"):
        make_env("task:cartpole")
    with pytest.raises(ConfigError, match="MineRL is not installed"):
        make_env("task:minerl/treechop")


def test_the_cartpole_expert_balances_every_task_to_the_limit():
    cartpole = tasks.family("cartpole")
    for task in (*cartpole.train, *cartpole.test):
        env, act = cartpole.make(task, render_mode=None), cartpole.expert(task)
        obs, _ = env.reset(seed=3)
        steps, terminated, truncated = 0, False, False
        while not (terminated or truncated):
            obs, _, terminated, truncated, _ = env.step(int(act(obs[None])[0]))
            steps += 1
        assert (steps, terminated) == (500, False), task.name

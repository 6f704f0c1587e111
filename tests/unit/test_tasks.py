"""Few-shot task families (rlrings/envs/tasks.py): fixed disjoint splits, task ids any
actor can run, physics that really vary, and rewards for one achievement only."""

import numpy as np
import pytest

from rlrings.core.errors import ConfigError
from rlrings.envs import env_spec, make_env, make_vector_env, tasks


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


def test_reacher_test_tasks_have_a_longer_arm_and_the_arm_really_changes():
    family = tasks.family("reacher")
    assert (len(family.train), len(family.test)) == (12, 3)
    assert min(t.variation["scale"] for t in family.test) > max(t.variation["scale"] for t in family.train)
    assert family.reward_threshold == -3.75  # Reacher-v5's own
    spec = env_spec("task:reacher/s1.3-d2")
    assert spec.action_space.shape == (2,) and spec.observation_space.dtype == np.float32

    def fingertip_after(env_id, torques):
        env = make_env(env_id, render_mode=None)
        env.reset(seed=3)
        for _ in range(10):
            env.step(torques)
        arm = env.unwrapped
        return np.linalg.norm(arm.get_body_com("fingertip")[:2]), arm.data.qvel[:2].copy()

    reach_short, _ = fingertip_after("task:reacher/s0.7-d1", np.zeros(2, np.float32))
    reach_long, _ = fingertip_after("task:reacher/s1.3-d1", np.zeros(2, np.float32))
    assert reach_short < 0.21 * 0.7 + 1e-3 < reach_long - 0.1, (reach_short, reach_long)
    _, damped = fingertip_after("task:reacher/s1-d2", np.ones(2, np.float32))
    _, free = fingertip_after("task:reacher/s1-d0.5", np.ones(2, np.float32))
    assert np.abs(damped).sum() < np.abs(free).sum(), "more damping, slower joints under the same torques"


def test_reacher_targets_lie_within_the_tasks_reach_and_the_expert_reaches_them():
    family = tasks.family("reacher")
    for task in (family.train[0], family.test[-1]):
        env = family.make(task, render_mode=None)
        expert = family.expert(task)
        for episode in range(3):
            obs, _ = env.reset(seed=episode)
            assert np.linalg.norm(obs[4:6]) < 0.2 * task.variation["scale"]
            done = False
            while not done:
                obs, _, terminated, truncated, _ = env.step(expert(obs[None])[0])
                done = terminated or truncated
            assert np.linalg.norm(obs[8:10]) < 0.02, "the fingertip ends on the target"


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

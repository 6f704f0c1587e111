"""The few-shot learning and statistics (rlrings/fewshot): real environments and
real PyTorch steps, no processes or sockets."""

import copy
import math

import numpy as np
import pytest
import torch

from rlrings.core.errors import ConfigError
from rlrings.core.models import ModelSpec, build_model
from rlrings.envs import env_spec, tasks
from rlrings.fewshot import Experiment, FewShotConfig
from rlrings.fewshot.adaptation import (
    AdaptConfig,
    MetaConfig,
    adapt,
    clone,
    collect,
    evaluate,
    make_batch,
    pretrain,
    reptile,
    seed_for,
)
from rlrings.fewshot.report import interval, summarise
from rlrings.rpc.config import load_config

CARTPOLE = tasks.family("cartpole")
TEST_TASK = CARTPOLE.test[0]


def envs(task, count):
    return [CARTPOLE.make(task, render_mode=None) for _ in range(count)]


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return build_model(ModelSpec.for_env(env_spec(TEST_TASK.env_id), "fewshot"))


def test_collect_records_each_step_of_each_episode():
    played = collect(envs(TEST_TASK, 3), fresh_model(), seed=4)
    assert len(played.obs) == 3 and played.steps == sum(len(r) for r in played.rewards)
    for obs, actions, rewards, last in zip(played.obs, played.actions, played.rewards, played.last_obs, strict=True):
        assert obs.shape == (len(rewards), 4) and actions.shape == (len(rewards),)
        assert len(np.unique(obs, axis=0)) == len(obs)  # every step's own observation, not a shared buffer
        assert not np.array_equal(obs[-1], last)
    first, _ = CARTPOLE.make(TEST_TASK, render_mode=None).reset(seed=4 * 1009)
    np.testing.assert_array_equal(played.obs[0][0], first)
    again = collect(envs(TEST_TASK, 3), fresh_model(), seed=4)
    assert again.returns == played.returns  # seeded: the same episodes


def test_time_limited_episodes_are_bootstrapped_and_ended_ones_are_not():
    expert = CARTPOLE.expert(TEST_TASK)
    perfect = collect(envs(TEST_TASK, 1), None, seed=1, expert=expert)
    falling = collect(envs(TEST_TASK, 1), None, seed=1, expert=lambda obs: np.zeros(len(obs), np.int64))
    assert perfect.returns == [500.0] and perfect.truncated == [True]
    assert falling.returns[0] < 100 and falling.truncated == [False]
    model, config = fresh_model(), AdaptConfig(gamma=0.9)
    with torch.no_grad():
        _, tail = model(torch.as_tensor(perfect.last_obs[0][None]))
    batch = make_batch(model, perfect, config)
    # scaled targets: (1 - gamma) * (r + gamma * V_tail / (1 - gamma)) at the last step
    assert batch.targets[-1].item() == pytest.approx(0.1 * 1.0 + 0.9 * tail.item(), rel=1e-5)
    ended = make_batch(model, falling, config)
    assert ended.targets[-1].item() == pytest.approx(0.1, rel=1e-5)
    assert ended.targets[0].item() == pytest.approx(0.1 * sum(0.9**t for t in range(len(falling.rewards[0]))), rel=1e-4)
    assert batch.advantages.mean().item() == pytest.approx(0.0, abs=1e-5)


def test_reptile_first_step_lands_on_the_adapted_weights():
    """With one task per iteration and the outer step at 1 (its start), Reptile's
    first update is exactly the adaptation of a copy on that iteration's episodes."""
    task_envs = [envs(CARTPOLE.train[0], 2)]
    meta = MetaConfig(env_steps=1, task_batch=1, episodes_per_task=2, meta_step=1.0)
    config = AdaptConfig(epochs=3)
    start = fresh_model(1)
    expected = adapt(copy.deepcopy(start), collect(task_envs[0], start, seed=7 * 100_003), config)
    model = copy.deepcopy(start)
    log = reptile(model, task_envs, meta, config, seed=7)
    assert len(log.env_steps) == 1
    for got, want, before in zip(model.parameters(), expected.parameters(), start.parameters(), strict=True):
        torch.testing.assert_close(got, want)
        assert not torch.equal(got, before)


def test_pretraining_learns_across_training_tasks():
    model = fresh_model(2)
    task_envs = [envs(task, 4) for task in CARTPOLE.train]
    log = pretrain(model, task_envs, MetaConfig(env_steps=30_000), AdaptConfig(), seed=0)
    early, late = np.mean(log.mean_return[:5]), np.mean(log.mean_return[-5:])
    assert late > 2 * early, (early, late)
    assert log.env_steps[-1] >= 30_000 and log.env_steps == sorted(log.env_steps)


def test_one_demonstration_is_enough_to_clone_the_cartpole_expert():
    demonstration = collect(envs(TEST_TASK, 1), None, seed=5, expert=CARTPOLE.expert(TEST_TASK))
    model = fresh_model(3)
    before = evaluate(envs(TEST_TASK, 5), model, seed=9)
    clone(model, demonstration, epochs=200, learning_rate=3e-3)
    after = evaluate(envs(TEST_TASK, 5), model, seed=9)
    assert before < 100 and after >= 475, (before, after)


def test_the_robot_arm_family_adapts_and_clones_with_gaussian_torques():
    family = tasks.family("reacher")
    task = family.test[0]
    arm_envs = [family.make(task, render_mode=None) for _ in range(3)]
    torch.manual_seed(0)
    model = build_model(ModelSpec.for_env(env_spec(task.env_id), "fewshot"))
    assert model.spec.distribution == "gaussian"
    played = collect(arm_envs, model, seed=2)
    assert played.actions[0].dtype == np.float32 and played.actions[0].shape == (50, 2)
    assert np.abs(np.concatenate(played.actions)).max() > 1, "the policy's own samples, before clipping"
    batch = make_batch(model, played, AdaptConfig())
    assert torch.isfinite(batch.old_log_probs).all()
    before = [p.detach().clone() for p in model.parameters()]
    adapt(model, played, AdaptConfig(epochs=3))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    ten = [family.make(task, render_mode=None) for _ in range(10)]
    demonstrations = collect(ten, None, seed=4, expert=family.expert(task))
    scratch = [evaluate(ten, model, seed=9, greedy=greedy) for greedy in (False, True)]
    clone(model, demonstrations, epochs=300, learning_rate=3e-3)
    cloned = [evaluate(ten, model, seed=9, greedy=greedy) for greedy in (False, True)]
    # the spread is learned too (sampled torques cost less), and the mean moves the arm to targets
    assert cloned[0] > scratch[0] + 15 and cloned[1] > scratch[1] + 5, (scratch, cloned)


def test_seeds_are_stable_and_tell_jobs_apart():
    assert seed_for("shots", "l1.5-m0.1-f10", 5, 0) == seed_for("shots", "l1.5-m0.1-f10", 5, 0)
    assert len({seed_for("shots", task.name, 5, 0) for task in CARTPOLE.test}) == len(CARTPOLE.test)
    assert 0 < seed_for("x") < 2**31


def test_interval_is_students_t_over_seeds():
    stat = interval([1.0, 2.0, 3.0])
    half = 4.302653 * 1.0 / math.sqrt(3)  # t(0.975, 2 dof) * sd / sqrt(n)
    assert stat["mean"] == 2.0 and stat["n"] == 3
    assert (stat["low"], stat["high"]) == pytest.approx((2.0 - half, 2.0 + half), rel=1e-5)
    assert interval([4.0])["low"] is None


def test_summary_pairs_methods_by_seed_and_checks_the_ordering():
    config = load_config(FewShotConfig, [], methods="scratch,pretrain", shots="1,5", seeds=3, test_tasks=2)
    done = {}
    for seed in range(3):
        for task in ("a", "b"):
            for k in (1, 5):
                for method, after in (("scratch", 20 + seed * 10), ("pretrain", 25 + seed * 10 + k)):
                    record = {"kind": "adapt", "method": method, "seed": seed, "task": task, "shots": k,
                              "before": 10.0, "after": float(after), "seconds": 0.1}  # fmt: skip
                    done[f"{method}/{task}/{k}/{seed}"] = record
    results = summarise(done, config, ["a", "b"])
    pretrain_k5 = results["methods"]["pretrain"]["after_adaptation"]["5"]
    assert pretrain_k5["mean"] == pytest.approx(40.0) and pretrain_k5["n"] == 3
    comparison = {c["shots"]: c for c in results["comparisons_with_scratch"]}
    # seed-paired differences are 6 and 10 with no spread: an interval of zero width above 0
    assert comparison[1]["difference"]["mean"] == pytest.approx(6.0) and comparison[1]["better"]
    assert comparison[5]["difference"]["low"] == pytest.approx(10.0)
    assert results["expected_ordering"]["holds"] is True
    done["pretrain/a/1/0"]["after"] = -100.0  # one bad seed: the K=1 interval now spans 0
    assert summarise(done, config, ["a", "b"])["expected_ordering"]["holds"] is False


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"methods": "scratch,maml"}, "methods: .*unknown methods \\['maml'\\]"),
        ({"shots": "1,x"}, "shots"),
        ({"family": "chess"}, "unknown task family 'chess'"),
        ({"family": "crafter", "methods": "scratch,bc"}, "bc needs demonstrations.*--methods scratch"),
        ({"test_tasks": 10}, "test_tasks: 10 is more than the 9 held-out tasks"),
    ],
)
def test_bad_settings_name_the_setting(settings, message):
    with pytest.raises(ConfigError, match=message):
        Experiment(load_config(FewShotConfig, [], **settings))


def test_jobs_cover_every_method_seed_task_and_k_once():
    config = load_config(FewShotConfig, [], methods="reptile,scratch", shots="5,1,5", seeds=2, test_tasks=3)
    jobs = Experiment(config).jobs()
    ids = [job.id for job in jobs]
    assert config.shots == [1, 5] and len(ids) == len(set(ids)) == 2 + 2 * 2 * 3 * 2
    assert [job.id for job in jobs[:2]] == ["train/reptile/s0", "train/reptile/s1"]


def test_shards_split_the_jobs_by_method_and_seed_without_overlap(monkeypatch):
    settings = {"methods": "scratch,reptile,bc", "shots": "1,5", "seeds": 3, "test_tasks": 2}
    everything = {job.id for job in Experiment(load_config(FewShotConfig, [], **settings)).jobs()}
    seen, owners = set(), {}
    for index in range(4):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))  # what a Kubernetes Indexed Job sets
        config = load_config(FewShotConfig, [], shards=4, **settings)
        assert config.shard_index == index
        jobs = Experiment(config).jobs()
        ids = {job.id for job in jobs}
        assert not ids & seen
        seen |= ids
        for job in jobs:
            assert owners.setdefault((job.method, job.seed), index) == index  # a training and its adaptations together
    assert seen == everything
    with pytest.raises(ConfigError, match="shard_index: 4 is not below shards"):
        load_config(FewShotConfig, [], shards=4, shard_index=4)

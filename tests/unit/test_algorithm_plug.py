"""The Algorithm plug: one registry, typed settings, spaces and distributions, PPO and APPO's losses."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rlrings import algorithms
from rlrings.algorithms.api import TablePlan
from rlrings.algorithms.appo import AppoConfig, AppoLearning
from rlrings.algorithms.ppo import PpoConfig, PpoLearning, clipped_surrogate, gae
from rlrings.algorithms.trajectories import TrajectoryActing
from rlrings.core import distributions, experience
from rlrings.core.errors import ConfigError
from rlrings.core.models import ModelSpec, build_model
from rlrings.core.spaces import Box, Discrete
from rlrings.envs import env_spec, make_vector_env
from rlrings.rpc import wire
from rlrings.rpc.config import load_config
from rlrings.services.actor.config import ActorConfig
from rlrings.services.learner.config import LearnerConfig

ROOT = Path(__file__).resolve().parents[2]


def test_the_registry_is_the_only_list_and_the_chart_schema_agrees():
    assert algorithms.NAMES == ("impala", "dqn", "ppo", "appo", "sac", "bc")
    schema = json.loads((ROOT / "helm/rlrings/values.schema.json").read_text())
    assert tuple(schema["properties"]["algorithm"]["properties"]["name"]["enum"]) == algorithms.NAMES
    # every setting of every algorithm, with its type and bounds (regenerate: algorithms.values_schema())
    assert schema["properties"]["algorithm"] == algorithms.values_schema()
    for name, algorithm in algorithms.REGISTRY.items():
        assert algorithm.config().name == name and algorithm.action_spaces


def test_settings_nest_the_algorithm_and_refuse_unknown_keys_naming_them(tmp_path):
    assert load_config(LearnerConfig, ["--algorithm", "dqn"]).algorithm.replay_ratio == 8.0
    config = tmp_path / "actor.yaml"
    config.write_text("algorithm:\n  name: ppo\n  unroll_length: 64\n")
    assert load_config(ActorConfig, ["--config", str(config)]).algorithm.unroll_length == 64
    config.write_text("algorithm:\n  name: ppo\n  unrol_length: 64\n")
    with pytest.raises(
        ConfigError, match=r"algorithm: 'unrol_length' is not a setting of ppo; did you mean 'unroll_length'"
    ):
        load_config(ActorConfig, ["--config", str(config)])
    with pytest.raises(ConfigError, match="algorithm"):
        load_config(ActorConfig, ["--algorithm", "sarsa"])


def test_an_algorithm_refuses_an_action_space_it_does_not_support_naming_all_three():
    with pytest.raises(ConfigError, match=r"algorithm: dqn supports Discrete actions; env 'Pendulum-v1' has Box"):
        algorithms.get("dqn").model_spec(env_spec("Pendulum-v1"))
    for name in ("impala", "ppo", "appo", "bc"):
        assert algorithms.get(name).model_spec(env_spec("Pendulum-v1")).distribution == "gaussian"


def test_spaces_round_trip_through_the_proto_with_their_bounds():
    for space in (
        Discrete(3, ("a", "b", "c")),
        Box((2,), "float32", (-1.0, 0.0), (1.0, 5.0)),
        Box((4, 4, 3), "uint8", 0, 255),
    ):
        assert wire.space_from_proto(wire.space_to_proto(space)) == space
    spec = algorithms.get("ppo").model_spec(env_spec("Pendulum-v1"))
    assert wire.model_spec_from_proto(wire.model_spec_to_proto(spec)) == spec
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_categorical_matches_hand_computed_values():
    dist = distributions.Categorical(torch.log(torch.tensor([[0.25, 0.75]])))
    assert float(dist.log_prob(torch.tensor([1]))) == pytest.approx(math.log(0.75))
    assert float(dist.entropy()) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert int(dist.mode()) == 1
    draws = distributions.Categorical(torch.log(torch.tensor([[0.25, 0.75]])).expand(20_000, 2)).sample(
        torch.Generator().manual_seed(0)
    )
    assert float(draws.float().mean()) == pytest.approx(0.75, abs=0.02)


def test_gaussians_match_hand_computed_values_and_the_tanh_one_stays_in_bounds():
    params = torch.tensor([[0.5, -1.0, math.log(2.0), 0.0]])  # means 0.5, -1; stds 2, 1
    dist = distributions.DiagGaussian(params)
    x = torch.tensor([[1.5, -1.0]])
    expected = (-0.5 * 0.25 - math.log(2.0) - 0.5 * math.log(2 * math.pi)) + (-0.5 * math.log(2 * math.pi))
    assert float(dist.log_prob(x)) == pytest.approx(expected)
    assert float(dist.entropy()) == pytest.approx(math.log(2.0) + 1.0 + math.log(2 * math.pi))
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])
    squashed = distributions.TanhGaussian(params.expand(5000, 4), low, high)
    samples = squashed.sample(torch.Generator().manual_seed(0))
    assert bool(((samples >= low) & (samples <= high)).all())
    # log_prob is the density of the squashed variable: it integrates to 1 over the bounds (1-D check)
    one = distributions.TanhGaussian(torch.tensor([[0.3, math.log(0.7)]]).expand(4001, 2), low[:1], high[:1])
    grid = torch.linspace(-2 + 1e-3, 2 - 1e-3, 4001)[:, None]
    assert float(one.log_prob(grid).exp().sum() * (grid[1, 0] - grid[0, 0])) == pytest.approx(1.0, abs=0.01)
    sample, logp = one.rsample_with_log_prob()
    assert torch.allclose(logp, one.log_prob(sample), atol=1e-3)


def test_gae_and_the_clipped_surrogate_match_hand_computed_values():
    rewards = torch.tensor([[1.0], [1.0]])
    discounts = torch.tensor([[0.5], [0.0]])  # the episode ends after step 1
    values = torch.tensor([[2.0], [3.0]])
    advantages = gae(rewards, discounts, values, torch.tensor([10.0]), lam=0.5)
    # delta1 = 1 - 3 = -2; delta0 = 1 + 0.5 * 3 - 2 = 0.5; A0 = 0.5 + 0.5 * 0.5 * -2 = 0
    assert advantages.flatten().tolist() == pytest.approx([0.0, -2.0])
    logp, old = torch.log(torch.tensor([1.5, 0.5])), torch.zeros(2)
    loss, clipped = clipped_surrogate(logp, old, torch.tensor([1.0, 1.0]), clip=0.2)
    assert float(loss) == pytest.approx(-(1.2 + 0.5) / 2) and float(clipped) == 1.0


def _batch(spec, generator, size=8, steps=6):
    obs = torch.randn(size, steps + 1, *spec.obs_shape, generator=generator)
    if isinstance(spec.action_space, Discrete):
        action = torch.randint(0, spec.action_space.n, (size, steps + 1), generator=generator)
    else:
        action = torch.randn(size, steps + 1, *spec.action_space.shape, generator=generator)
    return {
        "obs": obs,
        "action": action,
        "reward": torch.ones(size, steps + 1),
        "terminated": torch.zeros(size, steps + 1, dtype=torch.bool),
        "truncated": torch.zeros(size, steps + 1, dtype=torch.bool),
        "logp": torch.full((size, steps + 1), -1.0),
        "final_obs": torch.zeros_like(obs),
    }


@pytest.mark.parametrize("name", ["ppo", "appo"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_ppo_and_appo_fit_their_value_targets_on_both_action_spaces(name, env_id):
    torch.manual_seed(0)
    plug = algorithms.get(name)
    spec = plug.model_spec(env_spec(env_id))
    learning = plug.learning(plug.config(learning_rate=3e-3, normalize_returns=False), spec, build_model(spec))
    batch = _batch(spec, torch.Generator().manual_seed(0))
    first = learning.update(batch, torch.ones(8)).stats
    for _ in range(60):
        last = learning.update(batch, torch.ones(8)).stats
    assert float(last["value_loss"]) < float(first["value_loss"]) / 4
    assert learning.updates == 61
    config = learning.config
    assert set(first) >= {"policy_loss", "value_loss", "entropy", "clip_fraction", "approx_kl", "grad_norm"}
    assert isinstance(config, PpoConfig) and (name == "ppo") != isinstance(config, AppoConfig)
    assert isinstance(learning, PpoLearning) and (name == "appo") == isinstance(learning, AppoLearning)


def test_appo_targets_are_vtrace_and_equal_gae_on_policy_with_matching_lambda():
    """On-policy (behaviour = target) with lambda equal, V-trace's vs - V is GAE's advantage."""
    torch.manual_seed(0)
    env = env_spec("CartPole-v1")
    ppo_plug, appo_plug = algorithms.get("ppo"), algorithms.get("appo")
    spec = ppo_plug.model_spec(env)
    model = build_model(spec)
    ppo = PpoLearning(ppo_plug.config(normalize_returns=False, gae_lambda=0.9), spec, model)
    appo = AppoLearning(appo_plug.config(normalize_returns=False, trace_decay=0.9), spec, model)
    batch = _batch(spec, torch.Generator().manual_seed(1))
    with torch.no_grad():  # the behaviour policy is the current one
        params, _ = model(batch["obs"].flatten(0, 1))
        batch["logp"] = spec.make_distribution(params).log_prob(batch["action"].flatten(0, 1)).view(8, 7)
    _, ppo_advantages, ppo_returns, _ = ppo.targets(batch)
    _, _, appo_returns, _ = appo.targets(batch)
    assert torch.allclose(ppo_returns, appo_returns, atol=1e-5)


def test_ppo_stops_a_batchs_epochs_at_the_target_kl():
    torch.manual_seed(0)
    spec = algorithms.get("ppo").model_spec(env_spec("CartPole-v1"))
    config = PpoConfig(learning_rate=0.05, epochs=10, minibatches=1, target_kl=1e-4)
    learning = PpoLearning(config, spec, build_model(spec))
    calls = []
    original = learning.step
    learning.step = lambda *a, **k: calls.append(1) or original(*a, **k)
    learning.update(_batch(spec, torch.Generator().manual_seed(0)), torch.ones(8))
    assert 1 <= len(calls) < 10


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_trajectory_acting_writes_what_the_table_signature_says(env_id):
    env = env_spec(env_id)
    config = algorithms.get("ppo").config(unroll_length=5)
    spec = algorithms.get("ppo").model_spec(env)
    acting = TrajectoryActing(config, env, spec, num_envs=3, seed=0)
    model = build_model(spec).eval()
    envs = make_vector_env(env_id, 3, seed=0)
    obs, _ = envs.reset(seed=0)
    chunks = []
    for _ in range(5):
        actions = acting.act(model, obs, policy_version=7)
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        chunks += acting.observe(obs, actions, next_obs, rewards, terminated, truncated, info)
        obs = next_obs
    envs.close()
    assert len(chunks) == 1 and chunks[0].policy_version == 7
    signature = experience.signature(config, env)
    for name, column in chunks[0].columns.items():
        assert column.shape == (acting.chunk_length, *signature[name]["shape"]), name
        assert column.dtype == np.dtype(signature[name]["dtype"]), name
    plan = TablePlan(batch_size=4, writers=6, envs_per_actor=3)
    table = experience.table_config(config, env, plan)
    # on-policy: a batch, and what lets any one write in while a batch is short
    assert table["sequence_length"] == 6 and table["max_size"] == 4 + 3 - 1
    assert experience.table_config(algorithms.get("appo").config(unroll_length=5), env, plan)["max_size"] == 2 * 4 + 6


def test_image_models_take_frames_of_any_size():
    for shape in ((84, 84, 4), (210, 160, 3), (64, 64, 3)):
        observation = Box(shape, "uint8", 0, 255)
        spec = ModelSpec("cnn", observation, Discrete(6))
        params, value = build_model(spec)(torch.zeros(2, *shape, dtype=torch.uint8))
        assert params.shape == (2, 6) and value.shape == (2,)


@pytest.mark.parametrize("name", ["impala", "appo", "ppo", "dqn", "sac"])
def test_algorithms_declare_the_demonstrations_they_draw_from(name):
    env_id = "Pendulum-v1" if name == "sac" else "CartPole-v1"
    algorithm = algorithms.get(name)

    def sources(**settings):
        config = algorithm.config(**settings)
        spec = algorithm.model_spec(env_spec(env_id), "mlp", config)
        return algorithm.learning(config, spec, build_model(spec)).sources(batch_size=64)

    assert sources() == ()  # by default: experience alone
    (source,) = sources(bc_pretrain_updates=100)
    assert (source.table, source.pretrain_updates, source.per_update) == ("demonstrations", 100, 0)
    # the pre-training step is a behaviour-cloning update on a batch of demonstration steps
    demo = {
        "obs": torch.randn(8, 1, *env_spec(env_id).observation_space.shape),
        "action": torch.zeros(
            8, 1, *env_spec(env_id).action_space.shape, dtype=torch.int64 if name != "sac" else torch.float32
        ),
    }
    terms = source.pretrain(demo)
    assert set(terms) == {"bc_loss", "bc_accuracy"} and math.isfinite(float(terms["bc_loss"]))
    if name == "dqn":  # dqn also mixes a share of every batch in, as one-step transitions
        (mixed,) = sources(bc_pretrain_updates=100, demo_fraction=0.25)
        assert (mixed.per_update, mixed.pretrain_updates) == (16, 100) and mixed.join is not None


def test_bc_has_no_pretraining_on_what_it_learns_from_anyway():
    with pytest.raises(ValueError, match="bc_pretrain_updates"):
        algorithms.get("bc").config(bc_pretrain_updates=10)

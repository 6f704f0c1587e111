"""Continuous control's parts: SAC's losses and update, bounded signature columns, the
observation normaliser, MuJoCo envs as float32, and the viewer's continuous key maps."""

import copy

import numpy as np
import pytest
import torch

from rlrings import algorithms
from rlrings.algorithms.api import TablePlan
from rlrings.algorithms.sac import TwinQ, actor_loss, critic_loss, temperature_loss
from rlrings.core import experience
from rlrings.core.errors import ConfigError, InvalidArgumentError
from rlrings.core.models import ObservationNormalizer, Policy, build_model
from rlrings.core.spaces import Box, Discrete
from rlrings.envs import EnvSpec, env_spec, make_env, make_vector_env
from rlrings.rpc import wire
from rlrings.rpc.signature import Column, Signature
from rlrings.services.replay.config import TableConfig
from rlrings.services.viewer.keymaps import continuous_keymap_for

PENDULUM = EnvSpec("Pendulum-v1", Box((3,), "float32", -8, 8), Box((1,), "float32", -2, 2))


# -- SAC's losses, against hand-computed values ---------------------------------------------


def test_critic_loss_is_the_soft_bellman_error_of_each_critic():
    q = torch.tensor([[1.0, 2.0], [3.0, 0.0]])  # [members, B]
    next_q = torch.tensor([[5.0, 1.0], [4.0, 2.0]])  # the target critics: min is [4, 1]
    reward, discount = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.0])  # the second transition ended
    next_logp, alpha = torch.tensor([2.0, 7.0]), torch.tensor(0.5)
    loss, td = critic_loss(q, reward, discount, next_q, next_logp, alpha, torch.ones(2))
    # targets: 1 + 0.5 * (4 - 0.5 * 2) = 2.5, and 0 (no bootstrap after an ending)
    errors = np.array([[1.0 - 2.5, 2.0 - 0.0], [3.0 - 2.5, 0.0 - 0.0]])
    assert float(loss) == pytest.approx((0.5 * errors**2).mean(1).sum())
    assert td.tolist() == pytest.approx(np.abs(errors).mean(0).tolist())
    weighted, _ = critic_loss(q, reward, discount, next_q, next_logp, alpha, torch.tensor([0.0, 1.0]))
    assert float(weighted) == pytest.approx((0.5 * errors[:, 1] ** 2).sum() / 2)


def test_actor_and_temperature_losses():
    q = torch.tensor([[3.0, 1.0], [2.0, 4.0]])
    logp = torch.tensor([0.5, -1.0])
    assert float(actor_loss(q, logp, torch.tensor(0.2))) == pytest.approx(((0.2 * 0.5 - 2) + (0.2 * -1 - 1)) / 2)
    log_alpha = torch.tensor(0.0, requires_grad=True)
    # entropy -logp averages 0.25, below a target of 1: the loss's gradient raises alpha
    temperature_loss(log_alpha, logp, target_entropy=1.0).backward()
    assert float(log_alpha.grad) < 0


def test_twin_q_members_are_independent_networks_in_one_pass():
    spec = algorithms.get("sac").model_spec(PENDULUM)
    critic = TwinQ(spec, (8, 8))
    obs, action = torch.randn(5, 3), torch.randn(5, 1)
    q = critic(obs, action)
    assert q.shape == (2, 5)
    x = torch.cat([obs, action], -1)
    for member in range(2):
        h = x
        for i, (w, b) in enumerate(zip(critic.weights, critic.biases)):
            h = h @ w[member] + b[member]
            h = torch.relu(h) if i < 2 else h
        assert torch.allclose(q[member], h.squeeze(-1), atol=1e-5)


def sac_learning(**settings):
    plug = algorithms.get("sac")
    config = plug.config(**settings)
    spec = plug.model_spec(PENDULUM, None, config)
    return plug.learning(config, spec, build_model(spec)), spec


def transitions(batch=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(batch, 1, 3, generator=g),
        "action": torch.rand(batch, 1, 1, generator=g) * 4 - 2,
        "reward": torch.randn(batch, 1, generator=g),
        "next_obs": torch.randn(batch, 1, 3, generator=g),
        "discount": torch.full((batch, 1), 0.99),
    }


def test_one_sac_update_steps_all_three_optimizers_and_polyak_averages_the_targets():
    learning, spec = sac_learning(tau=0.1, hidden=[16, 16])
    assert spec.distribution == "tanh_gaussian" and spec.args == {"hidden": [16, 16], "activation": "relu",
                                                                   "shared": True}  # fmt: skip
    before = {name: copy.deepcopy(module.state_dict()) for name, module in learning.modules().items()}
    update = learning.update(transitions(), torch.ones(32))
    assert {"critic_loss", "actor_loss", "alpha", "entropy", "temperature_loss"} <= set(update.stats)
    assert update.priorities is None  # a uniform table
    after = {name: module.state_dict() for name, module in learning.modules().items()}
    for name in ("model", "critic", "temperature"):
        changed = [k for k in after[name] if not torch.equal(after[name][k], before[name][k])]
        assert changed, f"{name} did not move"
    for key, target in after["critic_target"].items():  # target <- target + tau * (critic - target)
        expected = before["critic_target"][key] + 0.1 * (after["critic"][key] - before["critic_target"][key])
        assert torch.allclose(target, expected, atol=1e-6), key
    assert float(learning.temperature().detach()) != 1.0
    state = learning.state_dict()
    assert set(state["optimizers"]) == {"model", "critic", "temperature"}
    again, _ = sac_learning(tau=0.1, hidden=[16, 16])
    again.load_state_dict(state)
    for name, module in again.modules().items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, learning.modules()[name].state_dict()[key])


def test_sac_with_a_prioritized_table_returns_priorities_and_weights_its_errors():
    learning, _ = sac_learning(prioritized=True, hidden=[16])
    update = learning.update(transitions(batch=8), torch.ones(8))
    assert update.priorities.shape == (8,) and bool((update.priorities > 0).all())
    assert learning.importance_sampling_exponent() > 0


def test_sac_refuses_what_it_cannot_parameterise_naming_the_env():
    sac = algorithms.get("sac")
    with pytest.raises(ConfigError, match=r"sac supports Box actions; env 'CartPole-v1' has Discrete\(2\)"):
        sac.check(EnvSpec("CartPole-v1", Box((4,), "float32"), Discrete(2)))
    unbounded = EnvSpec("Free-v0", Box((3,), "float32"), Box((2,), "float32"))
    with pytest.raises(ConfigError, match=r"sac squashes its Gaussian into the action bounds.*use ppo or appo"):
        sac.check(unbounded)
    assert algorithms.get("ppo").model_spec(unbounded).distribution == "gaussian"  # unbounded: clipped nowhere


def test_sac_table_holds_its_replay_ratio_and_bounds_its_action_column():
    config = algorithms.get("sac").config()
    table = experience.table_config(config, PENDULUM, TablePlan(batch_size=256))
    assert table["signature"]["action"] == {"dtype": "float32", "shape": [1], "low": [-2.0], "high": [2.0]}
    assert table["selector"] == "uniform" and table["max_size"] == 1_000_000
    limiter = table["rate_limiter"]
    assert limiter["samples_per_insert"] == 256 and limiter["min_size_to_sample"] == config.learning_starts == 1000
    TableConfig(**table)  # replay takes it
    frames = EnvSpec("CarRacing-v3", Box((96, 96, 3), "uint8", 0, 255), Box((3,), "float32", (-1, 0, 0), 1))
    big = experience.table_config(config, frames, TablePlan(batch_size=256))
    assert big["max_size"] * 2 * 96 * 96 * 3 <= 2**31, "frames: as many transitions as fit in 2 GiB"


def test_sac_acts_randomly_for_its_share_then_samples_its_policy_within_the_bounds():
    plug = algorithms.get("sac")
    config = plug.config(random_steps=16, chunk_length=8)
    spec = plug.model_spec(PENDULUM, None, config)
    acting = plug.acting(config, PENDULUM, spec, num_envs=4, seed=0)
    model = build_model(spec)
    obs = np.zeros((4, 3), np.float32)
    chunks = []
    for _ in range(8):
        actions = acting.act(model, obs, 0)
        assert actions.shape == (4, 1) and actions.dtype == np.float32 and np.all(np.abs(actions) <= 2)
        info = {"final_obs": np.zeros((4, 3), np.float32)}
        chunks += acting.observe(obs, actions, obs, np.ones(4), np.zeros(4, bool), np.zeros(4, bool), info)
    assert len(chunks) == 4 and chunks[0].columns["action"].dtype == np.float32
    Signature([Column.bounded("action", "float32", (1,), -2, 2)]).check({"action": chunks[-1].columns["action"]})


# -- bounded columns -----------------------------------------------------------------------


def test_a_bounded_column_refuses_values_outside_naming_the_column_index_and_bound():
    signature = Signature([Column.bounded("action", "float32", (2,), -1, [1, 2])])
    signature.check({"action": np.array([[0.0, 2.0], [-1.0, 1.0]], np.float32)})
    with pytest.raises(
        InvalidArgumentError, match=r"\['action'\]: value 2.5 at index \[1, 1\] is above its high bound 2"
    ):
        signature.check({"action": np.array([[0.0, 1.5], [0.5, 2.5]], np.float32)})
    with pytest.raises(InvalidArgumentError, match=r"value -3 at index \[0, 0\] is below its low bound -1"):
        signature.check({"action": np.array([[-3.0, 0.0]], np.float32)})
    with pytest.raises(InvalidArgumentError, match="non-finite value nan"):
        signature.check({"action": np.array([[np.nan, 0.0]], np.float32)})


def test_a_clipping_column_stores_values_at_their_bound():
    signature = Signature([Column.bounded("action", "float32", (2,), -1, 1, "clip")])
    columns = {"action": np.array([[0.0, 1.5], [-3.0, 0.5]], np.float32)}
    assert signature.check(columns) == 2
    assert columns["action"].tolist() == [[0.0, 1.0], [-1.0, 0.5]]


def test_bounds_travel_through_the_proto_and_bad_ones_are_refused_at_config_time():
    signature = Signature([Column.bounded("a", "float32", (2,), [-1, 0], 1, "clip"), Column("r", np.dtype("f4"), ())])
    assert Signature.from_protos(signature.to_protos()) == signature
    assert "a: float32[2] in [[-1, 0], 1] (clipped)" in repr(signature)
    base = {"name": "t", "signature": {"a": {"dtype": "float32", "shape": [2], "low": -1, "high": 1}}}
    TableConfig(**base)
    for column, message in (
        ({"dtype": "float32", "shape": [2], "low": [0, 0, 0]}, "3 bounds for steps of 2 values"),
        ({"dtype": "float32", "shape": [2], "low": 1, "high": 0}, "is above high"),
        ({"dtype": "bool", "shape": [], "low": 0}, "bounds need a numeric dtype"),
    ):
        with pytest.raises(ValueError, match=message):
            TableConfig(name="t", signature={"a": column})


# -- observation normalisation -------------------------------------------------------------


def test_the_observation_normaliser_keeps_the_running_mean_and_variance():
    normalizer = ObservationNormalizer((3,))
    rng = np.random.default_rng(0)
    batches = [rng.normal(5.0, 3.0, (n, 3)).astype(np.float32) for n in (7, 50, 1)]
    for batch in batches:
        normalizer.update(torch.as_tensor(batch))
    joined = np.concatenate(batches)
    assert normalizer.mean.numpy() == pytest.approx(joined.mean(0), rel=1e-5)
    assert normalizer.var.numpy() == pytest.approx(joined.var(0), rel=1e-4)
    out = normalizer(torch.as_tensor(joined)).numpy()
    assert out.mean(0) == pytest.approx(np.zeros(3), abs=1e-4) and out.std(0) == pytest.approx(np.ones(3), rel=1e-3)
    # two ranks of a ring, each with its own batch, end with the statistics of both batches together
    a, b = torch.as_tensor(batches[1][:25]), torch.as_tensor(batches[1][25:])
    ranks = [ObservationNormalizer((3,)), ObservationNormalizer((3,))]
    # what the ring's allreduce of each rank's [mean, E[x^2]] returns
    mean_over_ring = sum(torch.stack([d.double().mean(0), d.double().square().mean(0)]) for d in (a, b)) / 2
    for rank, data in zip(ranks, (a, b)):
        rank.update(data, reduce_mean=lambda _: mean_over_ring, ranks=2)
        assert rank.mean.numpy() == pytest.approx(batches[1].mean(0), rel=1e-5)


def test_ppo_normalises_observations_inside_the_published_model():
    plug = algorithms.get("ppo")
    config = plug.config(normalize_observations=True, reward_scale=0.1)
    spec = plug.model_spec(PENDULUM, None, config)
    assert spec.args == {"normalize_observations": True}
    assert wire.model_spec_from_proto(wire.model_spec_to_proto(spec)) == spec
    model = build_model(spec)
    learning = plug.learning(config, spec, model)
    columns = {
        "obs": torch.full((2, 33, 3), 4.0),
        "action": torch.zeros(2, 33, 1),
        "reward": torch.ones(2, 33),
        "terminated": torch.zeros(2, 33, dtype=torch.bool),
        "truncated": torch.zeros(2, 33, dtype=torch.bool),
        "logp": torch.zeros(2, 33),
        "final_obs": torch.zeros(2, 33, 3),
    }
    learning.update(columns)
    assert model.normalizer.mean.tolist() == pytest.approx([4.0, 4.0, 4.0])
    assert "normalizer.mean" in model.state_dict(), "the statistics travel with the weights"
    policy = Policy(spec, model)
    assert policy.act(np.full(3, 4.0, np.float32)).shape == (1,)


# -- envs and key maps -----------------------------------------------------------------------


def test_mujoco_envs_give_float32_observations_and_bounded_box_actions():
    spec = env_spec("Reacher-v5")
    assert spec.observation_space.dtype == np.float32 and spec.action_space.bounded
    envs = make_vector_env("Reacher-v5", 2, seed=0)
    obs, _ = envs.reset(seed=0)
    next_obs, *_ = envs.step(np.zeros((2, 2), np.float32))
    assert obs.dtype == next_obs.dtype == np.float32 and obs.shape == (2, 10)
    envs.close()


def test_a_hopper_that_moves_on_stays_in_the_frame():
    """The frames of a robot that has moved 4 m hold as much of its orange body as the first frame
    (a free camera keeps looking at where it started and shows the bare floor)."""
    env = make_env("Hopper-v5", render_mode="rgb_array")
    env.reset(seed=0)
    robot = env.unwrapped

    def body_pixels() -> int:
        frame = env.render().astype(int)
        return int(((frame[..., 0] > 150) & (frame[..., 0] - frame[..., 2] > 80)).sum())

    start = body_pixels()
    position = robot.data.qpos.copy()
    position[0] += 4.0
    robot.set_state(position, robot.data.qvel)
    moved = body_pixels()
    env.close()
    assert start > 500 and moved >= 0.8 * start, (start, moved)


def test_car_racing_keys_ramp_steering_gas_and_brake():
    spec = EnvSpec("CarRacing-v3", Box((96, 96, 3), "uint8", 0, 255), Box((3,), "float32", (-1, 0, 0), 1))
    keys = continuous_keymap_for(spec)
    action = keys.rest()
    assert action.tolist() == [0, 0, 0]
    for expected in (0.2, 0.4, 0.6, 0.8, 1.0, 1.0):  # steering ramps to full lock
        action = keys.step(action, ["ArrowRight", "ArrowUp"])
        assert action[0] == pytest.approx(expected)
    assert action[1] == pytest.approx(0.6)  # the gas ramps more slowly
    action = keys.step(action, [])
    assert action[0] == pytest.approx(0.7) and action[1] == 0  # released: steering eases back, gas is off
    action = keys.step(action, ["ArrowDown"])
    assert action[2] == pytest.approx(0.2)
    assert "gas -> 1" in keys.keys["ArrowUp"]


def test_other_box_actions_get_a_key_pair_per_element_or_a_clear_refusal():
    keys = continuous_keymap_for(PENDULUM)
    action = keys.step(keys.rest(), ["ArrowRight"])
    assert action.tolist() == pytest.approx([0.4]) and keys.knows("ArrowLeft") and not keys.knows("x")
    seven = EnvSpec("Pusher-v5", Box((23,), "float32"), Box((7,), "float32", -2, 2))
    with pytest.raises(ValueError, match="7 action elements, more than the 6 key pairs"):
        continuous_keymap_for(seven)


# -- PPO's MuJoCo settings and the return scale ------------------------------------------------


def test_mujoco_robots_get_ppos_and_appos_settings_of_record_where_the_user_gave_none():
    from rlrings.envs import settings_family

    assert [settings_family(e) for e in ("Reacher-v5", "HalfCheetah-v5", "CartPole-v1", "ALE/Pong-v5")] == [
        "mujoco", "mujoco", "", "atari"]  # fmt: skip
    ppo = algorithms.get("ppo")
    arm = ppo.for_env(ppo.config(epochs=3), "Reacher-v5")
    assert (arm.unroll_length, arm.epochs, arm.minibatches, arm.entropy_cost) == (128, 3, 32, 0.0), "given: kept"
    assert arm.normalize_observations and arm.preserve_values
    assert ppo.for_env(ppo.config(), "Pendulum-v1") == ppo.config(), "classic control keeps the defaults"
    appo = algorithms.get("appo")
    arm = appo.for_env(appo.config(learning_rate=1e-3), "HalfCheetah-v5")
    assert (arm.unroll_length, arm.epochs, arm.minibatches, arm.entropy_cost) == (32, 10, 8, 0.0)
    assert arm.normalize_observations and arm.preserve_values and arm.learning_rate == 1e-3, "given: kept"
    assert appo.for_env(appo.config(), "Pendulum-v1") == appo.config()


@pytest.mark.parametrize("name", ["ppo", "impala"])
def test_preserved_values_stay_put_in_return_units_while_the_scale_moves(name):
    """With preserve_values the value head is rescaled with every move of the return statistics, so
    a value in return units is what it was (PopArt's preserved outputs); without, it moves with them."""
    plug = algorithms.get(name)
    for preserve in (True, False):
        config = plug.config(preserve_values=preserve)
        spec = plug.model_spec(PENDULUM, None, config)
        learning = plug.learning(config, spec, build_model(spec))
        probe = torch.randn(5, 3)

        def values(learning=learning, probe=probe) -> torch.Tensor:
            mean, std, _ = learning.scales()
            with torch.no_grad():
                return learning.model(probe)[1] * std + mean

        for returns in (torch.full((64,), 40.0) + torch.randn(64), torch.full((64,), -300.0) + 30 * torch.randn(64)):
            before = values()
            learning.normalizer.update(returns, learning.ring,
                                       value=learning.model.value if preserve else None)  # fmt: skip
            moved = (values() - before).abs().max().item()
            assert (moved < 1e-3) if preserve else (moved > 1.0), (preserve, moved)


# -- SAC without the mesh (bench.continuous's synchronous side) ------------------------------


def test_the_synchronous_sides_ring_keeps_the_newest_transitions_and_samples_only_those():
    from bench.synchronous_side import Transitions

    ring = Transitions(capacity=4, rng=np.random.default_rng(0))
    ring.add({"obs": np.arange(3, dtype=np.float32)[:, None], "reward": np.zeros(3, np.float32)})
    assert ring.size == 3 and set(ring.sample(64)["obs"].flatten().tolist()) == {0.0, 1.0, 2.0}
    ring.add({"obs": np.arange(3, 6, dtype=np.float32)[:, None], "reward": np.zeros(3, np.float32)})
    batch = ring.sample(256)
    assert ring.size == 4 and batch["obs"].shape == (256, 1, 1) and batch["reward"].shape == (256, 1)
    assert set(batch["obs"].flatten().tolist()) == {2.0, 3.0, 4.0, 5.0}, "the two oldest were overwritten"


def test_the_synchronous_side_trains_sac_in_one_loop_and_reports_as_sb3s_side():
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    settings = json.dumps({"name": "sac", "learning_starts": 64, "random_steps": 64, "hidden": [16, 16]})
    result = subprocess.run(
        [sys.executable, "-m", "bench.synchronous_side", "--env", "Pendulum-v1", "--max-env-steps", "400",
         "--eval-every", "200", "--eval-episodes", "1", "--algorithm", settings],
        cwd=root, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    run = json.loads(result.stdout.strip().splitlines()[-1])
    assert run["env_steps"] == 400 and [step for step, _, _ in run["curve"]] == [200, 400]
    assert all(-1700 < ret < 0 for _, ret, _ in run["curve"]), "Pendulum's returns are in (-1,700, 0]"
    assert run["env_steps_to_solve"] is None and run["final_evaluation"] == run["curve"][-1][1]


def test_bench_continuous_counts_an_unsolved_run_at_the_budget_it_ran_under():
    from bench.continuous import TASKS, summarise

    solved = {"solved": True, "env_steps_to_solve": 30_000, "seconds_to_solve": 50.0, "seconds": 60.0,
              "final_evaluation": -3.5, "best_evaluation": -3.4}  # fmt: skip
    unsolved = {**solved, "solved": False, "env_steps_to_solve": None, "seconds_to_solve": None}
    given = summarise([solved, unsolved], "reacher", steps_budget=40_000)
    assert given["env_steps_to_solve"]["per_seed"] == [30_000, 40_000]
    assert given["seconds_to_solve"]["per_seed"] == [50.0, 60.0]
    own = summarise([unsolved], "reacher")
    assert own["env_steps_to_solve"]["per_seed"] == [TASKS["reacher"][2]] and own["solved"] == 0

"""Losses against small cases worked out by hand."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from rlrings.algorithms.dqn import double_dqn_loss
from rlrings.algorithms.impala import ImpalaConfig, ImpalaLearning, vtrace
from rlrings.algorithms.transitions import NStepAccumulator
from rlrings.core.models import ModelSpec, build_model
from rlrings.envs import env_spec
from rlrings.rpc import wire


def col(*values):
    return torch.tensor(values, dtype=torch.float32)[:, None]  # [T, B=1]


def test_vtrace_on_policy_is_the_n_step_return():
    # r = (1, 2), discount 0.5, V = (1, 1), bootstrap V = 4:
    # vs_1 = 2 + 0.5 * 4 = 4; vs_0 = 1 + 0.5 * 2 + 0.25 * 4 = 3
    # advantages: 1 + 0.5 * vs_1 - 1 = 2 and 2 + 0.5 * 4 - 1 = 3
    zeros = col(0.0, 0.0)
    vs, adv = vtrace(zeros, zeros, col(1.0, 2.0), col(0.5, 0.5), col(1.0, 1.0), torch.tensor([4.0]))
    assert vs[:, 0].tolist() == [3.0, 4.0]
    assert adv[:, 0].tolist() == [2.0, 3.0]


def test_vtrace_clips_importance_ratios():
    # rho = 2 is clipped to 1: same as on-policy.
    vs, _ = vtrace(col(0.0), col(math.log(2)), col(1.0), col(0.5), col(1.0), torch.tensor([4.0]))
    assert vs.item() == pytest.approx(1 + 0.5 * 4)
    # rho = 0.5: vs = V + 0.5 * (r + d * V' - V) = 1 + 0.5 * 2 = 2; advantage 0.5 * 2 = 1
    vs, adv = vtrace(col(0.0), col(math.log(0.5)), col(1.0), col(0.5), col(1.0), torch.tensor([4.0]))
    assert vs.item() == pytest.approx(2.0) and adv.item() == pytest.approx(1.0)


def test_vtrace_stops_at_episode_ends():
    vs, _ = vtrace(col(0.0, 0.0), col(0.0, 0.0), col(1.0, 2.0), col(0.0, 0.5), col(0.0, 0.0), torch.tensor([4.0]))
    assert vs[:, 0].tolist() == [1.0, 4.0]


class QTable(nn.Module):
    def __init__(self, q):
        super().__init__()
        self.q = nn.Parameter(torch.tensor(q, dtype=torch.float32))

    def forward(self, obs):
        return self.q[obs.long()], torch.zeros(len(obs))


def test_double_dqn_uses_the_online_argmax_and_the_target_value():
    online = QTable([[3.0, 0.0], [1.0, 5.0]])
    target = QTable([[0.0, 0.0], [10.0, 2.0]])
    loss, td = double_dqn_loss(
        online, target, obs=torch.tensor([0]), action=torch.tensor([0]), reward=torch.tensor([1.0]),
        next_obs=torch.tensor([1]), discount=torch.tensor([0.5]), weights=torch.tensor([2.0]),
    )  # fmt: skip
    # online picks action 1 at the next state; the target values it 2: y = 1 + 0.5 * 2 = 2; q = 3
    assert td.item() == pytest.approx(-1.0)
    assert loss.item() == pytest.approx(2.0 * 0.5)  # Huber at |td| = 1 is 0.5, times weight 2


def test_n_step_accumulator():
    acc = NStepAccumulator(n=2, gamma=0.5)
    assert acc.add("s0", 0, 1.0, "s1", False, False) == []
    (t0,) = acc.add("s1", 1, 2.0, "s2", False, False)
    assert t0[0] == "s0" and t0[2] == pytest.approx(1 + 0.5 * 2) and t0[3] == "s2" and t0[4] == pytest.approx(0.25)
    (t1,) = acc.add("s2", 0, 3.0, "s3", False, False)
    assert t1[2] == pytest.approx(2 + 0.5 * 3)
    end = acc.add("s3", 1, 4.0, "s4", True, False)
    assert [(t[0], t[2], t[3], t[4]) for t in end] == [("s2", 5.0, "s4", 0.0), ("s3", 4.0, "s4", 0.0)]
    acc.add("a", 0, 1.0, "b", False, False)
    cut = acc.add("b", 0, 1.0, "c", False, True)
    assert [(t[0], t[2], t[3], t[4]) for t in cut] == [("a", 1.5, "c", 0.25), ("b", 1.0, "c", 0.5)], (
        "a time limit still bootstraps from the final observation"
    )


def test_impala_updates_fit_the_baseline():
    spec = ModelSpec.for_env(env_spec("CartPole-v1"), "impala")
    torch.manual_seed(0)
    learner = ImpalaLearning(ImpalaConfig(learning_rate=1e-2), spec, build_model(spec))
    rng = np.random.default_rng(0)
    batch = {
        "obs": torch.tensor(rng.normal(size=(8, 6, 4)), dtype=torch.float32),
        "action": torch.tensor(rng.integers(0, 2, size=(8, 6)), dtype=torch.int32),
        "reward": torch.ones(8, 6),
        "terminated": torch.zeros(8, 6, dtype=torch.bool),
        "truncated": torch.zeros(8, 6, dtype=torch.bool),
        "logp": torch.full((8, 6), math.log(0.5)),
    }
    first = float(learner.update(batch).stats["baseline_loss"])
    for _ in range(50):
        last = float(learner.update(batch).stats["baseline_loss"])
    assert last < first / 4


@pytest.mark.parametrize("env_id", ["CartPole-v1", "crafter"])
def test_models_match_their_env(env_id):
    spec = ModelSpec.for_env(env_spec(env_id), "impala")
    model = build_model(spec)
    obs = torch.zeros((3, *spec.obs_shape), dtype=getattr(torch, spec.observation_space.dtype.name))
    logits, value = model(obs)
    assert logits.shape == (3, spec.action_space.n) and value.shape == (3,)
    assert wire.model_spec_from_proto(wire.model_spec_to_proto(spec)) == spec

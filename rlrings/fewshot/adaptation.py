"""The learning inside a few-shot experiment, as plain functions of a model and a task.

Every method adapts the same way at test time, so methods differ only in the
initialisation they start from (or, for behaviour cloning, in the data):

- :func:`collect` plays K episodes of a task at once, one environment each,
  with one batched forward pass per step;
- :func:`adapt` takes ``epochs`` policy-gradient steps (advantage
  actor-critic on returns-to-go) on those K episodes, from a fresh Adam;
- :func:`pretrain` is multi-task training: every iteration collects episodes
  of a batch of training tasks and takes one step on their joint loss;
- :func:`reptile` is first-order meta-learning over :func:`adapt` itself:
  every iteration adapts a copy to each task of a batch and moves the
  initialisation a step towards the mean of the adapted weights;
- :func:`clone` fits a fresh policy to K demonstrations (behaviour cloning).

Models come from :func:`rlrings.core.models.build_model`, which gives each its
``spec``: the action distribution (categorical over CartPole's pushes, a
Gaussian over the arm's torques) is the spec's, so every method works for
discrete and continuous families alike.

No gRPC and no processes here: the experiment (``rlrings.fewshot.experiment``)
schedules these as jobs, and unit tests drive them directly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlrings.algorithms.api import adam, gradient_step
from rlrings.algorithms.ppo import clipped_surrogate
from rlrings.core import distributions

Expert = Callable[[np.ndarray], np.ndarray]
"""A demonstrator: a batch of observations to a batch of actions."""


@dataclass
class Episodes:
    """K complete episodes, each as arrays with a leading time axis."""

    obs: list[np.ndarray]
    actions: list[np.ndarray]
    """As the policy sampled them (a Gaussian's samples before clipping to the bounds, so their
    log-probabilities are the policy's); the env stepped with them clipped."""
    rewards: list[np.ndarray]
    last_obs: list[np.ndarray]
    """The observation after each episode's last step."""
    truncated: list[bool]
    """Whether an episode was cut by a time limit (its return goes on: bootstrapped) rather than ended."""

    @property
    def returns(self) -> list[float]:
        return [float(rewards.sum()) for rewards in self.rewards]

    @property
    def steps(self) -> int:
        return sum(len(rewards) for rewards in self.rewards)


@dataclass(frozen=True)
class AdaptConfig:
    """How a policy adapts to a task from K episodes; shared by every method."""

    epochs: int = 10
    """Gradient steps on the K episodes."""
    learning_rate: float = 1e-3
    gamma: float = 0.99
    entropy_cost: float = 0.01
    value_cost: float = 0.5
    max_grad_norm: float = 1.0
    clip: float = 0.2
    """PPO's ratio clip: how far the epochs may move the policy from the one that played."""


@torch.no_grad()
def collect(
    envs: Sequence[gym.Env],
    model: nn.Module | None,
    seed: int,
    *,
    greedy: bool = False,
    expert: Expert | None = None,
) -> Episodes:
    """One episode in each of ``envs``, played by ``model`` (sampling, or the
    distribution's mode when ``greedy``) or by ``expert``; seeded by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    count = len(envs)
    obs = [[] for _ in range(count)]
    actions = [[] for _ in range(count)]
    rewards = [[] for _ in range(count)]
    truncations = [False] * count
    current = np.stack([env.reset(seed=seed * 1009 + i)[0] for i, env in enumerate(envs)])
    active = list(range(count))
    while active:
        batch = current[active]
        if expert is not None:
            chosen = np.asarray(expert(batch))
            stepped = chosen
        else:
            params, _ = model(torch.as_tensor(batch))
            dist = _distribution(model, params)
            sampled = dist.mode() if greedy else dist.sample(generator)
            chosen = sampled.numpy()
            stepped = distributions.to_env_action(model.spec.action_space, sampled)
        still = []
        for row, i in enumerate(active):
            obs[i].append(current[i].copy())
            actions[i].append(chosen[row])
            next_obs, reward, terminated, truncated, _ = envs[i].step(stepped[row])
            rewards[i].append(float(reward))
            current[i] = next_obs
            if not (terminated or truncated):
                still.append(i)
            truncations[i] = bool(truncated and not terminated)
        active = still
    return Episodes(
        [np.stack(o) for o in obs],
        [np.stack(a) for a in actions],  # int64 choices, or float32 vectors
        [np.asarray(r, np.float32) for r in rewards],
        [current[i].copy() for i in range(count)],
        truncations,
    )


def evaluate(envs: Sequence[gym.Env], model: nn.Module, seed: int, greedy: bool = False) -> float:
    """Mean return of ``model`` over one episode per env: the stochastic policy that
    adaptation optimises, or its argmax when ``greedy``."""
    return float(np.mean(collect(envs, model, seed, greedy=greedy).returns))


@dataclass
class Batch:
    """Episodes flattened for a loss, with targets and advantages fixed when made."""

    obs: torch.Tensor
    actions: torch.Tensor
    targets: torch.Tensor
    advantages: torch.Tensor
    old_log_probs: torch.Tensor


@torch.no_grad()
def make_batch(model: nn.Module, episodes: Episodes, config: AdaptConfig) -> Batch:
    """Targets, advantages and action log-probabilities of ``episodes`` under ``model``.

    The value head predicts the return-to-go scaled by (1 - gamma), which keeps
    both heads' losses near 1 whatever the episode length. An episode cut by a
    time limit is bootstrapped from the value of its last observation, so a
    perfect CartPole episode does not teach that its last steps were bad.
    Advantages are normalised over the batch.
    """
    scale = 1.0 - config.gamma
    _, tails = model(torch.as_tensor(np.stack(episodes.last_obs)))
    targets = []
    for rewards, truncated, tail in zip(episodes.rewards, episodes.truncated, tails.tolist(), strict=True):
        to_go, running = np.empty_like(rewards), tail / scale if truncated else 0.0
        for t in range(len(rewards) - 1, -1, -1):
            running = rewards[t] + config.gamma * running
            to_go[t] = running
        targets.append(to_go * scale)
    obs = torch.as_tensor(np.concatenate(episodes.obs))
    actions = torch.as_tensor(np.concatenate(episodes.actions))
    target = torch.as_tensor(np.concatenate(targets))
    logits, values = model(obs)
    advantage = target - values
    if len(advantage) > 1:
        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
    old_log_probs = _distribution(model, logits).log_prob(actions)
    return Batch(obs, actions, target, advantage, old_log_probs)


def clipped_loss(model: nn.Module, batch: Batch, config: AdaptConfig) -> torch.Tensor:
    """Actor-critic loss with PPO's clipped ratio: however many epochs run on the
    same K episodes, the policy moves at most about ``clip`` from the one that
    played them, so a few noisy episodes cannot wreck a good initialisation.
    On its first epoch (ratio 1) this is plain advantage actor-critic."""
    params, values = model(batch.obs)
    dist = _distribution(model, params)
    policy_loss, _ = clipped_surrogate(dist.log_prob(batch.actions), batch.old_log_probs, batch.advantages, config.clip)
    entropy = dist.entropy().mean()
    value_loss = (values - batch.targets).square().mean()
    return policy_loss + config.value_cost * value_loss - config.entropy_cost * entropy


class _Adam:
    """The learners' Adam and optimizer step on one model: the few-shot methods run in one
    process, outside any ring."""

    def __init__(self, model: nn.Module, learning_rate: float):
        self.parameters = list(model.parameters())
        self.optimizer = adam(self.parameters, learning_rate)

    def apply(self, loss: torch.Tensor, max_grad_norm: float | None) -> None:
        gradient_step(self.optimizer, loss, self.parameters, max_grad_norm)


def adapt(model: nn.Module, episodes: Episodes, config: AdaptConfig) -> nn.Module:
    """``model`` after ``config.epochs`` clipped actor-critic steps on ``episodes`` (in place)."""
    learner = _Adam(model, config.learning_rate)
    batch = make_batch(model, episodes, config)
    for _ in range(config.epochs):
        learner.apply(clipped_loss(model, batch, config), config.max_grad_norm)
    return model


def clone(model: nn.Module, demonstrations: Episodes, epochs: int, learning_rate: float) -> nn.Module:
    """``model`` fitted to the demonstrators' actions by maximum likelihood (in place): cross-entropy
    for discrete actions, the Gaussian's log-likelihood (mean and spread) for continuous ones."""
    learner = _Adam(model, learning_rate)
    obs = torch.as_tensor(np.concatenate(demonstrations.obs))
    actions = torch.as_tensor(np.concatenate(demonstrations.actions))
    for _ in range(epochs):
        learner.apply(-_distribution(model, model(obs)[0]).log_prob(actions).mean(), None)
    return model


@dataclass(frozen=True)
class MetaConfig:
    """Budget and batch of pre-training and meta-training (the same for both)."""

    env_steps: int = 300_000
    """Environment steps of training tasks each run may use."""
    task_batch: int = 4
    """Training tasks per iteration."""
    episodes_per_task: int = 4
    """Episodes collected per task per iteration (Reptile adapts on these)."""
    learning_rate: float = 1e-3
    """Pre-training's Adam learning rate."""
    meta_step: float = 1.0
    """Reptile's outer step size at the start, annealed linearly to 0 over the budget."""


@dataclass
class TrainingLog:
    """What a pre-training or meta-training run reports, per iteration."""

    env_steps: list[int]
    mean_return: list[float]


def pretrain(
    model: nn.Module,
    task_envs: Sequence[Sequence[gym.Env]],
    meta: MetaConfig,
    adapt_config: AdaptConfig,
    seed: int,
) -> TrainingLog:
    """Multi-task training of ``model`` (in place) on ``task_envs`` (one list of
    ``episodes_per_task`` envs per training task) until the step budget is spent."""
    learner = _Adam(model, meta.learning_rate)
    rng = np.random.default_rng(seed)
    log, steps, iteration = TrainingLog([], []), 0, 0
    while steps < meta.env_steps:
        chosen = rng.choice(len(task_envs), size=min(meta.task_batch, len(task_envs)), replace=False)
        batches = [collect(task_envs[i], model, _episode_seed(seed, iteration, i)) for i in chosen]
        loss = sum(clipped_loss(model, make_batch(model, batch, adapt_config), adapt_config) for batch in batches)
        loss = loss / len(batches)
        learner.apply(loss, adapt_config.max_grad_norm)
        steps, iteration = _log(log, batches, steps), iteration + 1
    return log


def reptile(
    model: nn.Module,
    task_envs: Sequence[Sequence[gym.Env]],
    meta: MetaConfig,
    adapt_config: AdaptConfig,
    seed: int,
) -> TrainingLog:
    """Reptile (first-order meta-learning) of ``model``'s initialisation (in place)
    for :func:`adapt` with ``adapt_config``, until the step budget is spent."""
    rng = np.random.default_rng(seed)
    log, steps, iteration = TrainingLog([], []), 0, 0
    while steps < meta.env_steps:
        chosen = rng.choice(len(task_envs), size=min(meta.task_batch, len(task_envs)), replace=False)
        start = [p.detach().clone() for p in model.parameters()]
        moved = [torch.zeros_like(p) for p in start]
        batches = []
        for i in chosen:
            batch = collect(task_envs[i], model, _episode_seed(seed, iteration, i))
            adapted = adapt(copy.deepcopy(model), batch, adapt_config)
            for total, after, before in zip(moved, adapted.parameters(), start, strict=True):
                total += after.detach() - before
            batches.append(batch)
        step_size = meta.meta_step * max(0.0, 1.0 - steps / meta.env_steps)
        with torch.no_grad():
            for parameter, total in zip(model.parameters(), moved, strict=True):
                parameter += step_size * total / len(chosen)
        steps, iteration = _log(log, batches, steps), iteration + 1
    return log


def _distribution(model: nn.Module, params: torch.Tensor):
    """The action distribution of ``model``'s policy head output."""
    return model.spec.make_distribution(params)


def _episode_seed(seed: int, iteration: int, task: int) -> int:
    return seed * 100_003 + iteration * 101 + int(task)


def _log(log: TrainingLog, batches: list[Episodes], steps: int) -> int:
    steps += sum(batch.steps for batch in batches)
    log.env_steps.append(steps)
    log.mean_return.append(float(np.mean([r for batch in batches for r in batch.returns])))
    return steps


def seed_for(*parts: object) -> int:
    """A stable 31-bit seed from a job's identity (the same for every method,
    so methods meet the same episodes: common random numbers)."""
    value = 0
    for part in map(str, parts):
        for char in part:
            value = (value * 131 + ord(char)) % (2**31 - 1)
    return value if value else 1

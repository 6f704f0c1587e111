"""The transition family: off-policy algorithms that learn from n-step transitions at a replay
ratio (DQN, SAC): the signature, the n-step accumulator and the acting half they share."""

from __future__ import annotations

import collections

import numpy as np

from rlrings.algorithms.api import Acting, Chunk
from rlrings.envs import EnvSpec


def transitions_signature(env: EnvSpec, action: dict | None = None) -> dict[str, dict]:
    """Column name -> {dtype, shape} of an n-step transition: ``reward`` is the discounted
    n-step return, ``discount`` is ``gamma**n`` (0 where the episode ended within the n steps);
    ``action`` replaces the action column (SAC's declares its bounds)."""
    observation = env.observation_space.column()
    return {
        "obs": observation,
        "action": action or env.action_space.column(),
        "reward": {"dtype": "float32", "shape": []},
        "next_obs": env.observation_space.column(),
        "discount": {"dtype": "float32", "shape": []},
    }


class NStepAccumulator:
    """Turns one env's steps into n-step transitions.

    ``add`` returns the transitions that became complete: one per step once n
    steps are buffered, and all the buffered ones when an episode ends.
    """

    def __init__(self, n: int, gamma: float):
        self.n, self.gamma = n, gamma
        self._steps: collections.deque = collections.deque()

    def add(self, obs, action, reward, next_obs, terminated: bool, truncated: bool) -> list[tuple]:
        self._steps.append((obs, action, reward))
        out = []
        if terminated or truncated:
            while self._steps:
                out.append(self._emit(next_obs, 0.0 if terminated else 1.0))
        elif len(self._steps) == self.n:
            out.append(self._emit(next_obs, 1.0))
        return out

    def _emit(self, next_obs, alive: float) -> tuple:
        ret = sum(self.gamma**i * step[2] for i, step in enumerate(self._steps))
        discount = alive * self.gamma ** len(self._steps)
        obs, action, _ = self._steps.popleft()
        return obs, action, np.float32(ret), next_obs, np.float32(discount)


class TransitionActing(Acting):
    """An acting half that writes n-step transitions (the config's ``n_step`` and ``gamma``) in
    chunks of its ``chunk_length``; subclasses choose the actions."""

    def __init__(self, config, env, model_spec, num_envs, seed):
        super().__init__(config, env, model_spec, num_envs, seed)
        self.accumulators = [NStepAccumulator(config.n_step, config.gamma) for _ in range(num_envs)]
        self.pending: list[tuple] = []

    @property
    def chunk_length(self) -> int:
        return self.config.chunk_length

    def observe(self, obs, actions, next_obs, rewards, terminated, truncated, info):
        self.env_steps += self.num_envs
        for i, accumulator in enumerate(self.accumulators):
            ended = terminated[i] or truncated[i]
            after = info["final_obs"][i] if ended else next_obs[i]
            self.pending += accumulator.add(obs[i], actions[i], rewards[i], after, terminated[i], truncated[i])
        chunks = []
        n = self.chunk_length
        while len(self.pending) >= n:
            batch, self.pending = self.pending[:n], self.pending[n:]
            obs_, action, ret, next_, discount = zip(*batch)
            columns = {
                "obs": np.stack(obs_),
                "action": np.asarray(action, self.env.action_space.dtype),
                "reward": np.asarray(ret, np.float32),
                "next_obs": np.stack(next_),
                "discount": np.asarray(discount, np.float32),
            }
            chunks.append(Chunk(columns))
        return chunks

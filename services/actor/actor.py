"""The acting loop: step a vector of envs with batched inference, write to replay.

The loop never waits for weights: a :class:`WeightsFollower` fetches new
versions in the background and the loop swaps them in between steps. It
waits only when replay has ``max_in_flight`` chunks unacknowledged, which is
the flow control that makes a slow or restarting replay a pause, not a crash.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from rlrings import codec, experience
from rlrings.algorithms.dqn import NStepAccumulator
from rlrings.control import RateMeter
from rlrings.envs import env_spec, make_vector_env
from rlrings.errors import ConfigError, RlringsError
from rlrings.models import ModelSpec, build_model, load_weights
from rlrings.parameter_client import ParameterClient, WeightsFollower
from rlrings.replay_client import ReplayClient
from services.actor.config import ActorConfig

log = logging.getLogger(__name__)


def _achievements(info: dict, i: int) -> tuple[str, ...]:
    """What env ``i``'s finished episode unlocked, where the game reports achievements."""
    counts = info.get("final_info", {}).get("achievements")
    if not counts:
        return ()
    return tuple(name for name, count in counts.items() if not name.startswith("_") and count[i] > 0)


@dataclass
class Episode:
    index: int
    episode_return: float
    length: int
    policy_version: int
    end_time: float
    achievements: tuple[str, ...] = ()


class Actor:
    def __init__(self, config: ActorConfig):
        self.config = config
        self.spec = env_spec(config.env)
        self.expected_signature = experience.signature(config.algorithm, self.spec)
        self.replay = ReplayClient(config.replay_address, security=config.client_security())
        self.parameters = ParameterClient(config.parameter_address, security=config.client_security())
        self.env_steps = 0
        self.episodes: collections.deque[Episode] = collections.deque(maxlen=1000)
        self.episode_count = 0
        self.achievement_episodes: collections.Counter[str] = collections.Counter()
        """Episodes in which each achievement was unlocked (Crafter)."""
        self.policy_version = 0
        self.paused = threading.Event()
        self.stopped = threading.Event()
        self.writer = None
        self._rate = RateMeter()
        torch.set_num_threads(config.torch_threads)

    # -- set-up ----------------------------------------------------------------

    def connect(self) -> None:
        """Checks the table and waits for the first weights.

        Raises:
            ConfigError: the replay table cannot hold what this env produces.
        """
        self.replay.wait_ready(120)
        signature, sequence_length = self.replay.signature(self.config.table)
        problem = experience.signature_mismatch(self.expected_signature, signature)
        if problem:
            raise ConfigError(f"table {self.config.table!r} cannot take {self.config.env} experience: {problem}")
        if self.config.algorithm == "impala" and sequence_length != self.config.unroll_length + 1:
            raise ConfigError(
                f"unroll_length: {self.config.unroll_length} needs items of {self.config.unroll_length + 1} steps; "
                f"table {self.config.table!r} has sequence_length {sequence_length}"
            )
        self.follower = WeightsFollower(self.parameters)
        header, data = self.follower.wait_first(self.config.weights_timeout_seconds)
        self.model_spec = ModelSpec.from_proto(header.model)
        if self.model_spec.num_actions != self.spec.num_actions or self.model_spec.obs_shape != tuple(
            self.spec.observation_space.shape
        ):
            raise ConfigError(
                f"env: the published model is for {self.model_spec.env_id} "
                f"(observations {self.model_spec.obs_shape}, {self.model_spec.num_actions} actions), "
                f"not {self.config.env}"
            )
        self.model = build_model(self.model_spec).eval()
        load_weights(self.model, data)
        self.policy_version = header.version
        chunk = self.config.num_envs * (self.config.unroll_length + 1)
        if self.config.algorithm == "dqn":
            chunk = self.config.chunk_length
        # final_obs is zeros but for the steps a time limit cut: nearly free once compressed, for frames
        compression = {"final_obs": codec.Compression.COMPRESSION_LZ4} if self.spec.is_image else {}
        self.writer = self.replay.writer(
            self.config.table, chunk_length=chunk, max_in_flight=self.config.max_in_flight, compression=compression
        )

    def _refresh_weights(self) -> None:
        latest = self.follower.latest()
        if latest is not None and latest[0].version > self.policy_version:
            load_weights(self.model, latest[1])
            self.policy_version = latest[0].version

    # -- the loop ----------------------------------------------------------------

    def run(self) -> None:
        envs = make_vector_env(self.config.env, self.config.num_envs, self.config.seed)
        obs, _ = envs.reset(seed=self.config.seed)
        generator = torch.Generator().manual_seed(self.config.seed)
        returns = np.zeros(self.config.num_envs)
        lengths = np.zeros(self.config.num_envs, dtype=np.int64)
        step = self._impala_step if self.config.algorithm == "impala" else self._dqn_step
        state = self._impala_state(obs) if self.config.algorithm == "impala" else self._dqn_state()
        try:
            while not self.stopped.is_set():
                if self.paused.is_set():
                    time.sleep(0.05)
                    continue
                self._refresh_weights()
                obs, rewards, done, info = step(envs, obs, state, generator)
                returns += rewards
                lengths += 1
                self.env_steps += self.config.num_envs
                for i in np.flatnonzero(done):
                    self._record(returns[i], lengths[i], _achievements(info, i))
                    returns[i], lengths[i] = 0.0, 0
        finally:
            envs.close()

    def _record(self, episode_return: float, length: int, achievements: tuple[str, ...] = ()) -> None:
        self.episode_count += 1
        self.achievement_episodes.update(achievements)
        self.episodes.append(
            Episode(
                self.episode_count, float(episode_return), int(length), self.policy_version, time.time(), achievements
            )
        )

    @torch.inference_mode()
    def _forward(self, obs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(torch.as_tensor(obs))

    def _write(self, columns: dict[str, np.ndarray], priorities=(), policy_version: int | None = None) -> None:
        version = self.policy_version if policy_version is None else policy_version
        while not self.stopped.is_set():
            try:
                self.writer.write_chunk(columns, priorities=priorities, policy_version=version)
                return
            except RlringsError as error:  # replay gave up on a chunk: report it, keep acting
                log.warning("replay refused or lost a chunk: %s", error)
                return

    # IMPALA: trajectories of unroll_length + 1 observations, one item per env.

    def _impala_state(self, obs: np.ndarray) -> dict:
        T, N = self.config.unroll_length, self.config.num_envs
        return {
            "t": 0,
            "obs": np.zeros((T + 1, N, *obs.shape[1:]), dtype=obs.dtype),
            "action": np.zeros((T + 1, N), np.int32),
            "reward": np.zeros((T + 1, N), np.float32),
            "terminated": np.zeros((T + 1, N), bool),
            "truncated": np.zeros((T + 1, N), bool),
            "logp": np.zeros((T + 1, N), np.float32),
            "final_obs": np.zeros((T + 1, N, *obs.shape[1:]), dtype=obs.dtype),
            "version": self.policy_version,
        }

    def _impala_step(self, envs, obs, state, generator):
        t = state["t"]
        if t == 0:  # weights change between steps only: the unroll's oldest policy is this one
            state["version"] = self.policy_version
        state["obs"][t] = obs
        logits, _ = self._forward(obs)
        log_probs = torch.log_softmax(logits, -1)  # no torch.distributions: its checks cost a quarter of a step
        actions = torch.multinomial(log_probs.exp(), 1, generator=generator)
        behaviour_logp = log_probs.gather(-1, actions).squeeze(-1)
        actions = actions.squeeze(-1)
        next_obs, rewards, terminated, truncated, info = envs.step(actions.numpy())
        final_obs = state["final_obs"][t]
        final_obs[:] = 0
        for i in np.flatnonzero(truncated & ~terminated):  # the learner bootstraps a time limit from it
            final_obs[i] = info["final_obs"][i]
        done = terminated | truncated
        state["action"][t] = actions.numpy()
        state["reward"][t] = rewards
        state["terminated"][t] = terminated
        state["truncated"][t] = truncated
        state["logp"][t] = behaviour_logp.numpy()
        t += 1
        if t == self.config.unroll_length:
            state["obs"][t] = next_obs
            columns = {
                name: np.ascontiguousarray(np.swapaxes(state[name], 0, 1)).reshape(-1, *state[name].shape[2:])
                for name in ("obs", "action", "reward", "terminated", "truncated", "logp", "final_obs")
            }
            self._write(columns, policy_version=state["version"])
            t = 0
        state["t"] = t
        return next_obs, rewards, done, info

    # DQN: n-step transitions, epsilon-greedy.

    def _dqn_state(self) -> dict:
        return {
            "acc": [NStepAccumulator(self.config.n_step, self.config.gamma) for _ in range(self.config.num_envs)],
            "out": [],
            "rng": np.random.default_rng(self.config.seed),
        }

    def _dqn_step(self, envs, obs, state, generator):
        q, _ = self._forward(obs)
        actions = q.argmax(-1).numpy().astype(np.int32)
        explore = state["rng"].random(len(actions)) < self.epsilon()
        actions[explore] = state["rng"].integers(0, self.spec.num_actions, explore.sum())
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        for i, accumulator in enumerate(state["acc"]):
            ended = terminated[i] or truncated[i]
            after = info["final_obs"][i] if ended else next_obs[i]
            state["out"] += accumulator.add(obs[i], actions[i], rewards[i], after, terminated[i], truncated[i])
        while len(state["out"]) >= self.config.chunk_length:
            batch, state["out"] = state["out"][: self.config.chunk_length], state["out"][self.config.chunk_length :]
            obs_, action, ret, next_, discount = zip(*batch)
            self._write(
                {
                    "obs": np.stack(obs_),
                    "action": np.asarray(action, np.int32),
                    "reward": np.asarray(ret, np.float32),
                    "next_obs": np.stack(next_),
                    "discount": np.asarray(discount, np.float32),
                }
            )
        return next_obs, rewards, terminated | truncated, info

    def epsilon(self) -> float:
        """DQN: the chance of a random action now, falling linearly from
        ``epsilon_start`` to ``epsilon`` over this actor's first ``epsilon_decay_steps``."""
        c = self.config
        if not c.epsilon_decay_steps:
            return c.epsilon
        done = min(1.0, self.env_steps / c.epsilon_decay_steps)
        return c.epsilon_start + done * (c.epsilon - c.epsilon_start)

    # -- status ------------------------------------------------------------------

    def steps_per_second(self) -> float:
        return self._rate.rate(self.env_steps)

    def close(self) -> None:
        self.stopped.set()
        if self.writer is not None:
            try:
                self.writer.close(flush=True, timeout=10)
            except Exception as error:  # shutting down: report, do not hang
                log.warning("unflushed chunks at shutdown: %s", error)
        if getattr(self, "follower", None) is not None:
            self.follower.close()
        self.replay.close()
        self.parameters.close()

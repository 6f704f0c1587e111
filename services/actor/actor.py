"""The acting loop: step envs in groups with batched inference, write to replay.

It knows no algorithm: the algorithm's acting half (``rlrings.algorithms``)
chooses the actions and turns steps into chunks. The policy's forward pass runs
here (:class:`LocalPolicy`) or on an inference service, batched with every other
actor's on the learner's device (``inference_address``). Envs step in groups, in
turn: a group's next observations go to the policy as soon as it has stepped, and
the next group steps while they are there, so the envs do not wait for a forward
pass (with one group, this is the plain loop: act, step, write). Local weights
never hold the loop up: a :class:`WeightsFollower` fetches new versions in the
background and they are swapped in between passes. The loop waits only when
replay has ``max_in_flight`` chunks unacknowledged, which is the flow control
that makes a slow or restarting replay a pause, not a crash. An on-policy actor
(PPO's) also waits, after each chunk, for replay to take it and for a newer
policy than the one that stepped it, so the learner trains on data of the
policy it is updating, as PPO's clipped ratio assumes.
"""

from __future__ import annotations

import collections
import logging
import math
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from rlrings import algorithms
from rlrings.clients.inference import InferenceClient
from rlrings.clients.parameter import ParameterClient, WeightsFollower
from rlrings.clients.replay import ReplayClient
from rlrings.core import experience
from rlrings.core.errors import ConfigError, NotFoundError, RlringsError, UnavailableError
from rlrings.core.models import build_model, load_weights
from rlrings.core.spaces import Discrete
from rlrings.envs import env_spec, make_vector_env
from rlrings.rpc import codec, wire
from rlrings.rpc.control import RateMeter
from rlrings.services.actor.config import ActorConfig
from rlrings.services.actor.metrics import return_histogram

log = logging.getLogger(__name__)


def _achievements(info: dict, i: int) -> tuple[str, ...]:
    """What env ``i``'s finished episode unlocked, where the game reports achievements."""
    counts = info.get("final_info", {}).get("achievements")
    if not counts:
        return ()
    return tuple(name for name, count in counts.items() if not name.startswith("_") and count[i] > 0)


def _game_end(info: dict, i: int) -> tuple[float, int] | None:
    """(raw score, length in steps) of the game env ``i`` finished this step, where the env
    reports games (Atari, whose episodes end at every lost life); None: a life, not the game."""
    final = info.get("final_info", {})
    if "raw_score" in final and final["_raw_score"][i]:
        return float(final["raw_score"][i]), int(final["game_steps"][i])
    return None


def _same_actions(a, b) -> bool:
    """Whether a model for action space ``a`` can act in ``b`` (names and bounds aside)."""
    if type(a) is not type(b):
        return False
    return a.n == b.n if isinstance(a, Discrete) else a.shape == b.shape


@dataclass
class Answer:
    """The network's outputs for one group's observations, and the version that gave them."""

    policy: torch.Tensor
    value: torch.Tensor
    version: int

    def __call__(self, observations) -> tuple[torch.Tensor, torch.Tensor]:
        """Stands in for the network when the acting half asks it (the pass already ran)."""
        return self.policy, self.value


class LocalPolicy:
    """The forward pass in this process: when asked, with one group; on a thread of its own with
    several, so that one group steps while another's pass runs (PyTorch's kernels release the GIL).
    New weights are swapped in on that same thread, between passes."""

    def __init__(self, actor: Actor, threaded: bool):
        self.actor = actor
        self._pending: collections.deque = collections.deque()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="actor-policy") if threaded else None

    def _forward(self, observations: np.ndarray) -> Answer:
        self.actor.refresh_weights()
        with torch.inference_mode():
            policy, value = self.actor.model(torch.as_tensor(observations))
        return Answer(policy, value, self.actor.local_version)

    def send(self, observations: np.ndarray, min_version: int = 0) -> None:
        """(``min_version`` has arrived here already: the pass swaps it in.)"""
        self._pending.append(self._thread.submit(self._forward, observations) if self._thread else observations)

    def receive(self) -> Answer:
        pending = self._pending.popleft()
        return pending.result() if isinstance(pending, Future) else self._forward(pending)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(cancel_futures=True)


class CentralPolicy:
    """The forward pass on the inference service, over one ``Act`` stream."""

    def __init__(self, stream):
        self.stream = stream

    def send(self, observations: np.ndarray, min_version: int = 0) -> None:
        self.stream.send(observations, min_version)

    def receive(self) -> Answer:
        answer = self.stream.receive()
        return Answer(torch.from_numpy(answer.policy.copy()), torch.from_numpy(answer.value.copy()), answer.version)

    def close(self) -> None:
        self.stream.close()


@dataclass
class EnvGroup:
    """Envs stepped together, their acting half's state, and their episodes in progress."""

    envs: object
    acting: object
    obs: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray


def group_sizes(num_envs: int, groups: int) -> list[int]:
    """``num_envs`` shared out over ``groups`` as evenly as can be, larger groups first."""
    return [num_envs // groups + (g < num_envs % groups) for g in range(groups)]


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
        self.algorithm = algorithms.get(config.algorithm.name)
        self.algorithm.check(self.spec)  # DQN in a Box action space: refused here, naming both
        self.expected_signature = experience.signature(config.algorithm, self.spec)
        self.replay = ReplayClient(config.replay_address, security=config.client_security())
        self.parameters = ParameterClient(config.parameter_address, security=config.client_security())
        self.env_steps = 0
        self.groups: list[EnvGroup] = []
        self.episodes: collections.deque[Episode] = collections.deque(maxlen=1000)
        self.episode_count = 0
        self.returns = return_histogram(config.env)
        """Every episode's return, for the metrics (the server registers it)."""
        self.achievement_episodes: collections.Counter[str] = collections.Counter()
        """Episodes in which each achievement was unlocked (Crafter)."""
        self.policy_version = 0
        self.paused = threading.Event()
        self.stopped = threading.Event()
        self.writer = None
        self.actings = []
        self._rate = RateMeter()
        torch.set_num_threads(config.torch_threads)
        if config.env_groups > 1:
            # A group's forward pass runs on other threads (gRPC's, or the local pass's), and each
            # needs the GIL while this thread steps the next group in Python; at the default 5 ms switch
            # interval a request waited for the step to end, and the groups' overlap was lost
            sys.setswitchinterval(0.0005)

    # -- set-up ----------------------------------------------------------------

    def connect(self) -> None:
        """Checks the table and waits for the first weights.

        Raises:
            ConfigError: the replay table cannot hold what this env produces, or the published
                model is for another env.
        """
        self.replay.wait_ready(120)
        signature, sequence_length = self.replay.signature(self.config.table)
        problem = experience.signature_mismatch(self.expected_signature, signature)
        if problem:
            raise ConfigError(f"table {self.config.table!r} cannot take {self.config.env} experience: {problem}")
        if self.config.inference_address:
            header = self._published_model()
            if self.config.on_policy:  # to wait for newer versions, which the inference service runs
                self.follower = WeightsFollower(self.parameters, header_only=True)
        else:
            self.follower = WeightsFollower(self.parameters)
            header, data = self.follower.wait_first(self.config.weights_timeout_seconds)
        self.model_spec = wire.model_spec_from_proto(header.model)
        if not _same_actions(self.model_spec.action_space, self.spec.action_space) or (
            self.model_spec.obs_shape != self.spec.observation_space.shape
        ):
            raise ConfigError(
                f"env: the published model is for {self.model_spec.env_id} "
                f"(observations {self.model_spec.obs_shape}, actions {self.model_spec.describe_actions()}), "
                f"not {self.config.env} (observations {self.spec.observation_space.shape}, actions "
                f"{self.spec.action_space.describe()})"
            )
        groups = self.config.env_groups
        if self.config.inference_address:
            self.inference = InferenceClient(self.config.inference_address, security=self.config.client_security())
            self.policy = CentralPolicy(self.inference.stream())
        else:
            self.model = build_model(self.model_spec).eval()
            load_weights(self.model, data)
            self.local_version = self.policy_version = header.version
            self.policy = LocalPolicy(self, threaded=groups > 1)
        sizes = group_sizes(self.config.num_envs, groups)
        # one group keeps the seed as it was; more get seeds of their own
        self.actings = [
            self.algorithm.acting(
                self.config.algorithm, self.spec, self.model_spec, size, self.config.seed + 7919 * g
            )  # fmt: skip
            for g, size in enumerate(sizes)
        ]
        problem = self.actings[0].check_table(sequence_length)  # (every group writes the same items)
        if problem:
            raise ConfigError(f"table {self.config.table!r}: {problem}")
        # Frame columns go LZ4-compressed: an Atari chunk (8 unrolls of 21 stacked 84x84x4 frames,
        # 4.7 MB raw, over gRPC's 4 MB message limit) measured 60x smaller, which also makes storing
        # each frame once per stack moot (single frames measured 4.4x smaller again: 107 bytes a
        # step against 470); final_obs is zeros but where a time limit cut, nearly free.
        compression = {
            name: codec.Compression.COMPRESSION_LZ4
            for name, column in self.expected_signature.items()
            if self.spec.is_image and list(column["shape"]) == list(self.spec.observation_space.shape)
        }
        self.writer = self.replay.writer(
            self.config.table,
            chunk_length=self.actings[0].chunk_length,
            max_in_flight=self.config.max_in_flight,
            compression=compression,
        )

    def _published_model(self):
        """The newest published version's header (its model spec), waited for as the local
        follower waits for the first weights."""
        deadline = time.monotonic() + self.config.weights_timeout_seconds
        while True:
            try:
                return self.parameters.fetch(tag="latest", header_only=True, timeout=30)[0]
            except (NotFoundError, UnavailableError):
                if time.monotonic() >= deadline or self.stopped.wait(0.5):
                    raise UnavailableError(
                        f"no weights published at {self.parameters.address} within "
                        f"{self.config.weights_timeout_seconds}s"
                    ) from None

    def refresh_weights(self) -> None:
        """Swaps in the newest local weights (called between forward passes)."""
        latest = self.follower.latest()
        if latest is not None and latest[0].version > self.local_version:
            load_weights(self.model, latest[1])
            self.local_version = latest[0].version

    # -- the loop ----------------------------------------------------------------

    def run(self) -> None:
        groups, start = [], 0
        for acting in self.actings:  # the envs' seeds run on from group to group, as one vector's would
            envs = make_vector_env(self.config.env, acting.num_envs, self.config.seed + start, training=True,
                                   threads=min(self.config.env_threads, acting.num_envs))  # fmt: skip
            obs, _ = envs.reset(seed=self.config.seed + start)
            groups.append(EnvGroup(envs, acting, obs, np.zeros(acting.num_envs), np.zeros(acting.num_envs, np.int64)))
            start += acting.num_envs
        self.groups = groups  # (what the loop steps: for status and tests)
        try:
            for group in groups:
                self.policy.send(group.obs)
            while not self.stopped.is_set():
                if self.paused.is_set():
                    time.sleep(0.05)
                    continue
                held: list[np.ndarray] = []
                written: list[int] = []
                for group in groups:
                    written += self._step(group, held)
                if held:  # on-policy: this round's unrolls are written; the next ones start with a newer policy
                    newer = self._wait_for_newer_policy(min(written))
                    for obs in held:  # (in group order, as the passes' answers are taken)
                        self.policy.send(obs, min_version=newer)
        finally:
            for group in groups:
                group.envs.close()

    def _step(self, group: EnvGroup, held: list[np.ndarray]) -> list[int]:
        """Acts on the answer for ``group``'s observations, steps it, sends its next observations
        to the policy at once, then writes and counts while they are there. An on-policy actor
        holds them back instead (in ``held``) where the group ended an unroll, or an earlier group
        of the round did. Returns the policy versions of the chunks it wrote."""
        answer = self.policy.receive()
        self.policy_version = answer.version
        actions = group.acting.act(answer, group.obs, answer.version)
        next_obs, rewards, terminated, truncated, info = group.envs.step(actions)
        chunks = group.acting.observe(group.obs, actions, next_obs, rewards, terminated, truncated, info)
        if held or (chunks and self.config.on_policy):
            held.append(next_obs)
        else:
            self.policy.send(next_obs)
        written = [self._write(chunk) for chunk in chunks]
        group.obs = next_obs
        group.returns += rewards
        group.lengths += 1
        self.env_steps += group.acting.num_envs
        for i in np.flatnonzero(terminated | truncated):
            if not self.spec.game_score:
                self._record(group.returns[i], group.lengths[i], _achievements(info, i))
            elif (game := _game_end(info, i)) is not None:  # the raw score, not the clipped lives
                self._record(*game)
            group.returns[i], group.lengths[i] = 0.0, 0
        return written

    def _wait_for_newer_policy(self, version: int) -> int:
        """Waits until replay has taken every chunk sent and a policy newer than ``version`` has
        arrived (the learner has trained on them), or the actor stops; returns the newer version
        (0 if stopped), which the next local pass swaps in and an inference service is asked for."""
        while not self.stopped.is_set():
            try:
                if self.writer.wait_acknowledged(timeout=0.5):
                    break
            except RlringsError as error:  # replay gave up on a chunk: reported, acting goes on
                log.warning("replay refused or lost a chunk: %s", error)
                break
        newer = self.follower.wait_newer(version, self.stopped)
        return newer[0].version if newer is not None else 0

    def _record(self, episode_return: float, length: int, achievements: tuple[str, ...] = ()) -> None:
        self.episode_count += 1
        if not math.isnan(episode_return):  # (a NaN would count in the +Inf bucket and poison the sum for good)
            self.returns.labels(env=self.config.env).observe(float(episode_return))
        self.achievement_episodes.update(achievements)
        self.episodes.append(
            Episode(
                self.episode_count, float(episode_return), int(length), self.policy_version, time.time(), achievements
            )
        )

    def _write(self, chunk) -> int:
        """Sends ``chunk``; returns the policy version it was written with."""
        version = self.policy_version if chunk.policy_version is None else chunk.policy_version
        try:
            self.writer.write_chunk(chunk.columns, priorities=chunk.priorities, policy_version=version)
        except RlringsError as error:  # replay gave up on a chunk: report it, keep acting
            log.warning("replay refused or lost a chunk: %s", error)
        return version

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
        if getattr(self, "policy", None) is not None:
            self.policy.close()
        if getattr(self, "follower", None) is not None:
            self.follower.close()
        if getattr(self, "inference", None) is not None:
            self.inference.close()
        self.replay.close()
        self.parameters.close()

"""The learner's process shell: sampling, updates, publishing, checkpoints, logs.

The algorithms themselves live in ``rlrings.algorithms``; this class feeds
them batches from replay and sends their weights on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from rlrings.algorithms.bc import behaviour_cloning_step
from rlrings.algorithms.dqn import DqnConfig, DqnLearner
from rlrings.algorithms.impala import ImpalaConfig, ImpalaLearner
from rlrings.control import RateMeter
from rlrings.envs import env_spec
from rlrings.errors import ConfigError, NotFoundError, RlringsError
from rlrings.models import WEIGHTS_FORMAT, ModelSpec, build_model, weights_to_bytes
from rlrings.parameter_client import ParameterClient
from rlrings.replay_client import ReplayClient
from services.learner.config import LearnerConfig

log = logging.getLogger(__name__)


class Learner:
    def __init__(self, config: LearnerConfig):
        self.config = config
        torch.set_num_threads(config.torch_threads)
        torch.manual_seed(config.seed)
        self.model_spec = ModelSpec.for_env(env_spec(config.env), config.algorithm, config.architecture)
        self.model = build_model(self.model_spec)
        rate = {} if config.learning_rate is None else {"learning_rate": config.learning_rate}
        if config.algorithm == "impala":
            self.algorithm = ImpalaLearner(
                self.model,
                ImpalaConfig(
                    gamma=config.gamma,
                    **rate,
                    baseline_cost=config.baseline_cost,
                    entropy_cost=config.entropy_cost,
                ),
            )
        else:
            self.algorithm = DqnLearner(
                self.model,
                DqnConfig(
                    gamma=config.gamma,
                    **rate,
                    target_update_every=config.target_update_every,
                ),
            )
        self.replay = ReplayClient(config.replay_address)
        self.parameters = ParameterClient(config.parameter_address)
        self.step = 0
        self.published_version = 0
        self.losses: dict[str, float] = {}
        self.policy_lag = 0.0
        self.replay_wait_seconds = 0.0
        self.paused = threading.Event()
        self.stopped = threading.Event()
        self.running = False
        self._demo_sampler = None
        self._rate = RateMeter()
        self._checkpoint_path = Path(config.checkpoint_dir) / "learner.pt"
        self._tensorboard = None
        self._lock = threading.Lock()  # guards the model between updates and checkpoints
        self.resume()

    # -- checkpoints -------------------------------------------------------------

    def resume(self) -> None:
        if not self._checkpoint_path.exists():
            return
        saved = torch.load(self._checkpoint_path, weights_only=False)
        if saved["model_spec"] != asdict(self.model_spec) | {"obs_shape": list(self.model_spec.obs_shape)}:
            log.warning("checkpoint %s is for another model; starting afresh", self._checkpoint_path)
            return
        self.model.load_state_dict(saved["model"])
        self.algorithm.optimizer.load_state_dict(saved["optimizer"])
        if isinstance(self.algorithm, DqnLearner):
            self.algorithm.target.load_state_dict(saved["target"])
            self.algorithm.updates = saved["step"]
        self.step = saved["step"]
        log.info("resumed from %s at update %d", self._checkpoint_path, self.step)

    def checkpoint(self) -> Path:
        """Writes model, optimizer and step atomically (temp file, then rename)."""
        path = self._checkpoint_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            state = {
                "model": self.model.state_dict(),
                "optimizer": self.algorithm.optimizer.state_dict(),
                "step": self.step,
                "model_spec": asdict(self.model_spec) | {"obs_shape": list(self.model_spec.obs_shape)},
            }
            if isinstance(self.algorithm, DqnLearner):
                state["target"] = self.algorithm.target.state_dict()
            temporary = path.with_suffix(".tmp")
            torch.save(state, temporary)
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.rename(temporary, path)
        return path

    # -- the loop ----------------------------------------------------------------

    def publish(self) -> int:
        with self._lock:
            data = weights_to_bytes(self.model)
        self.published_version = self.parameters.publish(
            data, self.model_spec.to_proto(), learner_step=self.step, format=WEIGHTS_FORMAT
        )
        return self.published_version

    def pretrain(self) -> dict[str, float]:
        """Behaviour cloning on the demonstrations table, ``bc_pretrain_steps`` updates.
        Skipped, with a warning, when the table has nothing in it."""
        steps = self.config.bc_pretrain_steps
        if not steps:
            return {}
        info = self.replay.info([self.config.demonstrations_table])[self.config.demonstrations_table]
        if info.size == 0:
            log.warning("no demonstrations in %r; skipping behaviour cloning", self.config.demonstrations_table)
            return {}
        stats: dict[str, float] = {}
        with self.replay.sample(self.config.demonstrations_table, batch_size=self.config.batch_size) as sampler:
            for _, batch in zip(range(steps), sampler):
                obs = torch.from_numpy(np.array(batch.columns["obs"][:, 0]))
                actions = torch.from_numpy(np.array(batch.columns["action"][:, 0]))
                with self._lock:
                    stats = behaviour_cloning_step(self.model, self.algorithm.optimizer, obs, actions)
        log.info("behaviour cloning: %d updates on %d demonstration steps: %s", steps, info.size, stats)
        self.losses = stats
        return stats

    def run(self) -> None:
        self.replay.wait_ready(120)
        self.parameters.wait_ready(120)
        if self.config.bc_pretrain_steps or self.config.demo_fraction:
            table = self.config.demonstrations_table
            try:
                self.replay.info([table])
            except NotFoundError:
                raise ConfigError(
                    f"demonstrations_table: replay has no table {table!r}, which bc_pretrain_steps and "
                    "demo_fraction read"
                ) from None
        self.pretrain()
        self.publish()
        if self.config.tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.config.tensorboard_dir))
        beta = self.config.importance_sampling_exponent if self.config.algorithm == "dqn" else 0.0
        sampler = self.replay.sample(
            self.config.table,
            batch_size=self.config.batch_size,
            prefetch=self.config.prefetch,
            importance_sampling_exponent=beta,
        )
        self.running = True
        try:
            for batch in sampler:
                if self.stopped.is_set():
                    break
                while self.paused.is_set() and not self.stopped.is_set():
                    time.sleep(0.05)
                self._update(batch)
                self.replay_wait_seconds = sampler.wait_seconds
                if self.step % self.config.publish_every == 0:
                    try:
                        self.publish()
                    except RlringsError as error:  # parameter restarting: the next publish catches up
                        log.warning("publishing weights failed: %s", error)
                if self.step % self.config.checkpoint_every == 0:
                    self.checkpoint()
                if self.config.max_updates and self.step >= self.config.max_updates:
                    break
        finally:
            self.running = False
            sampler.close()
            if self._demo_sampler is not None:
                self._demo_sampler.close()

    def _update(self, batch) -> None:
        columns = {name: torch.from_numpy(np.array(value)) for name, value in batch.columns.items()}
        weights = torch.as_tensor(batch.importance_weights, dtype=torch.float32)
        mixed = self._demonstration_transitions() if isinstance(self.algorithm, DqnLearner) else None
        if mixed is not None:
            columns = {name: torch.cat([columns[name], mixed[name]]) for name in columns}
            weights = torch.cat([weights, torch.ones(len(mixed["action"]))])
        with self._lock:
            if isinstance(self.algorithm, DqnLearner):
                stats, priorities = self.algorithm.update(columns, weights)
                priorities = priorities[: len(batch.keys)]  # demonstrations keep their own table's order
            else:
                stats, priorities = self.algorithm.update(columns), None
        if priorities is not None:
            try:
                self.replay.update_priorities(self.config.table, batch.keys, priorities)
            except RlringsError as error:  # replay restarting: these items keep their old priority
                log.warning("priority update lost: %s", error)
        self.step += 1
        self.losses = stats
        self.policy_lag = float(self.published_version - np.mean(batch.policy_versions))
        if self._tensorboard is not None and self.step % 10 == 0:
            for name, value in stats.items():
                self._tensorboard.add_scalar(f"losses/{name}", value, self.step)
            self._tensorboard.add_scalar("charts/learner_steps_per_second", self.steps_per_second(), self.step)
            self._tensorboard.add_scalar("charts/policy_lag_versions", self.policy_lag, self.step)
            self._tensorboard.add_scalar("charts/replay_wait_seconds", self.replay_wait_seconds, self.step)

    def _demonstration_transitions(self) -> dict[str, torch.Tensor] | None:
        """A slice of demonstration steps as one-step DQN transitions, or None."""
        count = round(self.config.batch_size * self.config.demo_fraction)
        if not count:
            return None
        if self._demo_sampler is None:
            if self.step % 50:
                return None
            table = self.config.demonstrations_table
            if self.replay.info([table])[table].size == 0:
                return None
            self._demo_sampler = self.replay.sample(table, batch_size=count)
        demo = next(self._demo_sampler)
        c = {name: torch.from_numpy(np.array(value)) for name, value in demo.columns.items()}
        return {
            "obs": c["obs"],
            "action": c["action"],
            "reward": c["reward"],
            "next_obs": c["next_obs"],
            "discount": (self.config.gamma * (~c["terminated"]).float()),
        }

    def steps_per_second(self) -> float:
        return self._rate.rate(self.step)

    def close(self) -> None:
        self.stopped.set()
        if self.step:
            self.checkpoint()
        if self._tensorboard is not None:
            self._tensorboard.close()
        self.replay.close()
        self.parameters.close()

"""The jobs of a few-shot experiment, and the worker process that runs them.

A job is either the training of one method's initialisation for one seed
(``train``: multi-task pre-training or Reptile over the family's training
tasks), or the adaptation of one initialisation to one held-out task with K
shots for one seed (``adapt``), ending in the return measured after it.
Workers are plain processes and clients of the experiment's parameter
service: a training job publishes its initialisation there under a named tag
(``fewshot/<experiment>/<method>/s<seed>``), and adaptation jobs on any worker
fetch it by that tag, so workers share nothing but the service and can run
anywhere that reaches it.
"""

from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch

from rlrings.clients.parameter import ParameterClient
from rlrings.core.models import ModelSpec, build_model, load_weights, weights_to_bytes
from rlrings.envs import env_spec, tasks
from rlrings.fewshot.adaptation import (
    AdaptConfig,
    MetaConfig,
    adapt,
    clone,
    collect,
    evaluate,
    pretrain,
    reptile,
    seed_for,
)
from rlrings.rpc import wire
from rlrings.rpc.security import AuthConfig, ClientSecurity, TlsConfig

METHODS = ("scratch", "pretrain", "reptile", "bc")
TRAINED = ("pretrain", "reptile")
"""Methods whose initialisation is trained before adaptation."""


@dataclass(frozen=True)
class Job:
    kind: Literal["train", "adapt"]
    method: str
    seed: int
    task: str = ""
    shots: int = 0

    @property
    def id(self) -> str:
        if self.kind == "train":
            return f"train/{self.method}/s{self.seed}"
        return f"adapt/{self.method}/{self.task}/k{self.shots}/s{self.seed}"


def init_tag(experiment: str, method: str, seed: int) -> str:
    """The parameter service's name for a trained initialisation."""
    return f"fewshot/{experiment}/{method}/s{seed}"


@dataclass(frozen=True)
class JobSettings:
    """What a worker needs to run any job of an experiment."""

    family: str
    experiment: str
    """The experiment's name in tags."""
    adapt: AdaptConfig
    meta: MetaConfig
    eval_episodes: int
    bc_epochs: int
    bc_learning_rate: float
    parameter_address: str
    tls: TlsConfig
    auth: AuthConfig


class Worker:
    """Runs jobs in one process: keeps the family's environments and the
    fetched initialisations between jobs."""

    def __init__(self, settings: JobSettings):
        self.settings = settings
        self.family = tasks.family(settings.family)
        first = (self.family.test or self.family.train)[0]
        self.spec = ModelSpec.for_env(env_spec(first.env_id), "fewshot")
        self._envs: dict[str, list[gym.Env]] = {}
        self._inits: dict[str, bytes] = {}
        self._parameters: ParameterClient | None = None

    def run(self, job: Job) -> dict:
        start = time.monotonic()
        result = self._train(job) if job.kind == "train" else self._adapt(job)
        return {"job": job.id, **asdict(job), **result, "seconds": time.monotonic() - start}

    # -- jobs ----------------------------------------------------------------

    def _train(self, job: Job) -> dict:
        model = self._initial_model(job.seed)
        task_envs = [self._task_envs(task.name, self.settings.meta.episodes_per_task) for task in self.family.train]
        train = pretrain if job.method == "pretrain" else reptile
        log = train(model, task_envs, self.settings.meta, self.settings.adapt, seed_for("train", job.method, job.seed))
        version = self._client().publish(
            weights_to_bytes(model),
            wire.model_spec_to_proto(self.spec),
            log.env_steps[-1],
            tags=[init_tag(self.settings.experiment, job.method, job.seed)],
        )
        every = max(1, len(log.env_steps) // 200)
        return {
            "version": version,
            "env_steps": log.env_steps[-1],
            "iterations": len(log.env_steps),
            "curve": {"env_steps": log.env_steps[::every], "mean_return": log.mean_return[::every]},
        }

    def _adapt(self, job: Job) -> dict:
        model = self._initial_model(job.seed)
        if job.method in TRAINED:
            load_weights(model, self._trained(job.method, job.seed))
        eval_envs = self._task_envs(job.task, self.settings.eval_episodes)
        eval_seed = seed_for("evaluate", job.task, job.seed)  # the same episodes before and after, for every method
        before = evaluate(eval_envs, model, eval_seed)
        if job.shots == 0:
            return {"before": before, "after": before, "env_steps": 0}
        shots = self._task_envs(job.task, job.shots)
        shots_seed = seed_for("shots", job.task, job.shots, job.seed)
        if job.method == "bc":
            expert = self.family.expert(self.family.task(job.task))
            episodes = collect(shots, None, shots_seed, expert=expert)
            clone(model, episodes, self.settings.bc_epochs, self.settings.bc_learning_rate)
        else:
            episodes = collect(shots, model, shots_seed)
            adapt(model, episodes, self.settings.adapt)
        after = evaluate(eval_envs, model, eval_seed)
        return {
            "before": before,
            "after": after,
            "env_steps": episodes.steps,
            "shot_return": float(np.mean(episodes.returns)),
        }

    # -- helpers -------------------------------------------------------------

    def _initial_model(self, seed: int) -> torch.nn.Module:
        """The same random initialisation for every method of a seed."""
        torch.manual_seed(seed_for("init", seed))
        return build_model(self.spec)

    def _task_envs(self, task: str, count: int) -> list[gym.Env]:
        envs = self._envs.setdefault(task, [])
        while len(envs) < count:
            envs.append(self.family.make(self.family.task(task), render_mode=None))
        return envs[:count]

    def _trained(self, method: str, seed: int) -> bytes:
        tag = init_tag(self.settings.experiment, method, seed)
        if tag not in self._inits:
            self._inits[tag] = self._client().fetch(tag=tag)[1]
        return self._inits[tag]

    def _client(self) -> ParameterClient:
        if self._parameters is None:
            security = ClientSecurity.of(self.settings.tls, self.settings.auth)
            self._parameters = ParameterClient(self.settings.parameter_address, security=security)
        return self._parameters


_worker: Worker | None = None


def start_worker(settings: JobSettings) -> None:
    """Pool initializer: one thread per worker (workers are the parallelism) and one :class:`Worker`.
    Ctrl-C is the experiment's to handle: it stops the workers itself."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    _worker = Worker(settings)


def run_job(job: Job) -> dict:
    """Runs ``job`` in this worker process (after :func:`start_worker`)."""
    assert _worker is not None, "start_worker was not called in this process"
    return _worker.run(job)

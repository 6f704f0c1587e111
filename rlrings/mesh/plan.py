"""The mesh's plan: every service's settings from ``rlrings up``'s, as a pure function.

No process starts here; the supervisor (``rlrings.mesh.supervisor``) runs
what :func:`plan` returns, and unit tests read it. Each service's settings
are what the Helm chart renders for it in a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from rlrings import algorithms
from rlrings.core import experience
from rlrings.core.ring import local_ring_environment
from rlrings.envs import EnvSpec
from rlrings.mesh.config import MeshConfig
from rlrings.ops.processes import ServiceProcess, free_port, usable_cores

TABLE = "experience"


def plan(
    config: MeshConfig, spec: EnvSpec, run_dir: Path, certificates: Callable[[], dict] | None = None
) -> list[ServiceProcess]:
    """Every service of the mesh, configured and not yet started, from the mesh's settings alone
    (``certificates`` makes the TLS files where ``tls`` is on).

    Raises:
        ConfigError: an algorithm that cannot act in the env's spaces, a queue too small.
    """
    c, run = config, run_dir
    algorithm = algorithms.get(c.algorithm.name)
    algorithm.check(spec)  # DQN in a Box action space: refused before anything starts
    mesh = c.shape()
    experience.mesh_tables(c.algorithm, spec, mesh, TABLE)  # a queue too small: refused here too
    # Every service gets the settings the user gave and the mesh's shape, and derives its own share
    # from them (an actor its exploration and seed, the learner its decay, replay its tables), as a
    # pod of the chart does from the same values: one planner, in the services.
    given = {"name": c.algorithm.name, **c.algorithm.model_dump(mode="json", exclude_unset=True)}
    shared = {"env": c.env, "algorithm": given, "mesh": mesh.model_dump(), "table": TABLE}

    def ports() -> dict:
        return {"port": free_port(), "metrics_port": free_port()}

    store: dict = {"snapshot_dir": str(run / "replay"), "snapshot_interval_seconds": 30}
    if c.cassandra:
        shard = re.sub(r"[^A-Za-z0-9_.-]", "-", run.resolve().name)[-64:]
        store = {
            "store": "cassandra",
            "cassandra": {
                "contact_points": c.cassandra,
                "keyspace": "rlrings_up",
                "replication_factor": min(3, len(c.cassandra)),
                "shard": shard,
            },
        }
    replay = ServiceProcess("replay", "rlrings.services.replay", {**ports(), **shared, **store}, run)
    parameter = ServiceProcess(
        "parameter", "rlrings.services.parameter", {**ports(), "directory": str(run / "weights")}, run
    )
    learner_config = {
        **ports(),
        "replay_address": replay.address,
        "parameter_address": parameter.address,
        **shared,
        **({"publish_every": c.publish_every} if c.publish_every else {}),
        "checkpoint_every": c.checkpoint_every,
        "checkpoint_dir": str(run / "checkpoints"),
        "tensorboard_dir": str(run / "tensorboard"),
    }
    inference = None
    if central_inference(c.inference):
        inference = ServiceProcess("inference", "rlrings.services.inference",
                                   {**ports(), "parameter_address": parameter.address}, run)  # fmt: skip
    if c.learners == 1:
        learners = [ServiceProcess("learner", "rlrings.services.learner", learner_config, run)]
    else:
        learners = [
            ServiceProcess(
                f"learner-{rank}", "rlrings.services.learner", {**learner_config, **ports(), "ring": c.ring}, run
            )
            for rank in range(c.learners)
        ]
        place_ring(learners)
    # the actors share this machine's cores: each steps its envs (Atari's C++ threads) on its share
    env_threads = min(c.envs_per_actor, max(1, usable_cores() // c.actors))
    actors = [
        ServiceProcess(
            f"actor-{i}",
            "rlrings.services.actor",
            {
                **ports(),
                "replay_address": replay.address,
                "parameter_address": parameter.address,
                **shared,
                "index": i,
                "env_threads": env_threads,
                **({"inference_address": inference.address} if inference else {}),
            },
            run,
        )
        for i in range(c.actors)
    ]
    viewer = ServiceProcess(
        "viewer",
        "rlrings.services.viewer",
        {
            **ports(),
            "http_port": c.viewer_port or free_port(),
            "replay_address": replay.address,
            "parameter_address": parameter.address,
            "env": c.env,
        },
        run,
        niceness=10,
    )
    services = [replay, parameter, *learners, *([inference] if inference else []), *actors,
                *([viewer] if c.viewer else [])]  # fmt: skip
    if c.tls and certificates is not None:
        tls = certificates()
        for service in services:
            service.config["tls"] = tls
    return services


def central_inference(setting: str) -> bool:
    """Whether actors act through an inference service: ``central``, or ``auto`` on a machine with
    a GPU (where one batched pass on it beats a CPU thread per actor)."""
    if setting == "auto":
        import torch

        return torch.cuda.is_available()
    return setting == "central"


def place_ring(ranks: list[ServiceProcess]) -> None:
    """Gives each rank its place, as the Helm chart does; a fresh port for
    the rendezvous each time the ring (re)starts."""
    master_port = free_port()
    for rank, service in enumerate(ranks):
        service.env = local_ring_environment(rank, len(ranks), master_port)


_SETTINGS = {
    "rlrings.services.actor": "ActorConfig",
    "rlrings.services.learner": "LearnerConfig",
    "rlrings.services.replay": "ReplayConfig",
    "rlrings.services.parameter": "ParameterConfig",
    "rlrings.services.viewer": "ViewerConfig",
    "rlrings.services.inference": "InferenceConfig",
}


def effective(service: ServiceProcess):
    """The settings a planned service runs with: its config as its own settings class derives them
    (an actor's share of the algorithm's settings, the learner's decay, replay's tables)."""
    import importlib

    module = importlib.import_module(f"{service.module}.config")
    return getattr(module, _SETTINGS[service.module]).model_validate(service.config)

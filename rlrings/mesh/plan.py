"""The mesh's plan: every service's settings from ``rlrings up``'s, as a pure function.

No process starts here; the supervisor (``rlrings.mesh.supervisor``) runs
what :func:`plan` returns, and unit tests read it. Each service's settings
are what the Helm chart renders for it in a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from rlrings import algorithms, experience
from rlrings.algorithms.base import TablePlan
from rlrings.envs import EnvSpec
from rlrings.mesh.config import MeshConfig
from rlrings.processes import ServiceProcess, free_port
from rlrings.ring import local_ring_environment

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
    batch = c.batch_size or algorithm.default_batch_size
    settings = c.algorithm.model_dump()
    unroll = settings.get("unroll_length", 1)
    if c.max_env_steps and not settings["learning_rate_decay_updates"] and algorithm.anneal_over_budget:
        # the learning rate decays over the updates the step budget allows
        settings["learning_rate_decay_updates"] = max(1, c.max_env_steps // (batch * c.learners * unroll))
    plan = TablePlan(TABLE, batch, c.actors * c.envs_per_actor, c.envs_per_actor)
    tables = experience.replay_tables(c.algorithm, spec, plan)

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
    replay = ServiceProcess("replay", "rlrings.services.replay", {**ports(), "tables": tables, **store}, run)
    parameter = ServiceProcess(
        "parameter", "rlrings.services.parameter", {**ports(), "directory": str(run / "weights")}, run
    )
    learner_config = {
        **ports(),
        "replay_address": replay.address,
        "parameter_address": parameter.address,
        "env": c.env,
        "algorithm": settings,
        "table": TABLE,
        "batch_size": batch,
        "publish_every": c.publish_every,
        "checkpoint_every": c.checkpoint_every,
        "checkpoint_dir": str(run / "checkpoints"),
        "tensorboard_dir": str(run / "tensorboard"),
        "seed": c.seed,
    }
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
    actors = [
        ServiceProcess(
            f"actor-{i}",
            "rlrings.services.actor",
            {
                **ports(),
                "replay_address": replay.address,
                "parameter_address": parameter.address,
                "env": c.env,
                "num_envs": c.envs_per_actor,
                "algorithm": settings | exploration(c, i, settings),
                "table": TABLE,
                "seed": c.seed + 1000 * i,
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
    services = [replay, parameter, *learners, *actors, *([viewer] if c.viewer else [])]
    if c.tls and certificates is not None:
        tls = certificates()
        for service in services:
            service.config["tls"] = tls
    return services


def exploration(config: MeshConfig, i: int, settings: dict) -> dict:
    """Algorithms with random steps first (SAC): each actor's share of them. Algorithms with
    epsilon exploration (DQN): actor i's epsilon, annealed from 1 over its
    share of the decay to its own final value; final values spread geometrically from 0.1 to
    0.01 across actors (Ape-X's spread, narrowed so that with 2 actors neither is almost greedy
    nor almost random). A value the user gave (``--algorithm.epsilon``) is every actor's instead of
    the spread. Others: nothing."""
    c = config
    given = c.algorithm.model_fields_set
    if "random_steps" in settings:  # SAC: each actor plays its share of the random steps
        return {"random_steps": settings["random_steps"] // c.actors}
    if "epsilon" not in settings:
        return {}
    final = 0.1 ** (1 + i / (c.actors - 1)) if c.actors > 1 else 0.1**1.5
    spread = {"epsilon": final, "epsilon_start": 1.0, "epsilon_decay_steps": c.epsilon_decay_env_steps // c.actors}
    return {key: value for key, value in spread.items() if key not in given}


def place_ring(ranks: list[ServiceProcess]) -> None:
    """Gives each rank its place, as the Helm chart does; a fresh port for
    the rendezvous each time the ring (re)starts."""
    master_port = free_port()
    for rank, service in enumerate(ranks):
        service.env = local_ring_environment(rank, len(ranks), master_port)

"""The replay tables a mesh serves, from the algorithm registry.

Each algorithm names its learner's table (``Algorithm.table``); the mesh,
``rlrings tables`` and the chart's defaults build replay's tables from it,
with the viewer's demonstrations beside it, and actors check the tables they
find against the signature they write before writing.
"""

from __future__ import annotations

import dataclasses

from rlrings import algorithms
from rlrings.algorithms.api import AlgorithmConfig, TablePlan
from rlrings.algorithms.bc import demonstrations_table
from rlrings.core.errors import ConfigError
from rlrings.core.shape import MeshShape
from rlrings.envs import EnvSpec

__all__ = [
    "TablePlan",
    "demonstrations_table",
    "mesh_tables",
    "replay_tables",
    "signature",
    "signature_mismatch",
    "table_config",
]


def table_config(config: AlgorithmConfig, env: EnvSpec, plan: TablePlan | None = None) -> dict:
    """The replay table the algorithm of ``config`` learns from, as a config mapping."""
    algorithm = algorithms.get(config.name)
    algorithm.check(env)
    plan = plan or TablePlan(batch_size=algorithm.default_batch_size)
    return algorithm.table(config, env, dataclasses.replace(plan, queue_batches=algorithm.pipeline().queue_batches))


def signature(config: AlgorithmConfig, env: EnvSpec) -> dict[str, dict]:
    """Column name -> {dtype, shape} of one step an actor of ``config``'s algorithm writes."""
    return table_config(config, env, TablePlan(batch_size=1, writers=1, envs_per_actor=1))["signature"]


def signature_mismatch(expected: dict[str, dict], found) -> str | None:
    """Why a table's signature (``rlrings.rpc.signature.Signature``) cannot take
    what an actor writes, or None when it can."""
    found_columns = {c.name: {"dtype": c.dtype.name, "shape": list(c.shape)} for c in found.values()}
    for name, declared in expected.items():
        column = {"dtype": declared["dtype"], "shape": list(declared["shape"])}  # bounds are the table's policy
        if name not in found_columns:
            return f"the table has no column {name!r} (it has {sorted(found_columns)})"
        if found_columns[name] != column:
            return f"column {name!r} is {found_columns[name]} in the table, the env writes {column}"
    extra = sorted(set(found_columns) - set(expected))
    return f"the table wants columns {extra} that this actor does not write" if extra else None


def replay_tables(config: AlgorithmConfig, env: EnvSpec, plan: TablePlan) -> list[dict]:
    """Every table a mesh playing ``env`` serves: the learner's, then the viewer's demonstrations."""
    return [table_config(config, env, plan), demonstrations_table(env)]


def mesh_tables(config: AlgorithmConfig, env: EnvSpec, mesh: MeshShape, table: str = "experience") -> list[dict]:
    """Every table replay serves in ``mesh``: what ``rlrings up`` plans and what a replay pod of the
    chart derives at start from the same values (its ``env``, ``algorithm`` and ``mesh``).

    Raises:
        ConfigError: a queue too small for a batch, or an on-policy algorithm whose actors make
            fewer unrolls per version than the learners' update takes (they would wait for ever).
    """
    algorithm = algorithms.get(config.name)
    plan = TablePlan(table, algorithm.batch_size(mesh), mesh.actors * mesh.envs_per_actor, mesh.envs_per_actor)
    if algorithm.on_policy and plan.writers < mesh.learners * plan.batch_size:
        raise ConfigError(
            f"batch_size: {config.name} is on-policy: each of its {plan.writers} envs ({mesh.actors} actors x "
            f"{mesh.envs_per_actor}) steps one unroll per version and waits, fewer than the "
            f"{mesh.learners} x {plan.batch_size} an update takes; give more actors or envs_per_actor, or a "
            f"batch_size of at most {plan.writers // mesh.learners}"
        )
    return replay_tables(algorithm.for_env(config, env.env_id), env, plan)

"""What actors write for each algorithm: table signatures and table configs.

IMPALA learns from trajectories of ``unroll_length + 1`` steps (the last
step's observation bootstraps the value; ``final_obs`` holds the last
observation of an episode cut by a time limit, for the learner to bootstrap
from) drawn once each from a FIFO queue that blocks writers when full.
DQN learns from n-step transitions drawn from a prioritized table. The mesh
builds replay's tables from these, and actors check the tables they find
against them before writing.
"""

from __future__ import annotations

from rlrings.envs import EnvSpec

ALGORITHMS = ("impala", "dqn")


def observation_column(env: EnvSpec) -> dict:
    """{dtype, shape} of ``env``'s observations; a new mapping per call, so that configs
    written as YAML never share (and anchor) one."""
    return {"dtype": env.observation_space.dtype.name, "shape": list(env.observation_space.shape)}


def signature(algorithm: str, env: EnvSpec) -> dict[str, dict]:
    """Column name -> {dtype, shape} of one step written for ``algorithm``."""
    if algorithm == "impala":
        return {
            "obs": observation_column(env),
            "action": {"dtype": "int32", "shape": []},
            "reward": {"dtype": "float32", "shape": []},
            "terminated": {"dtype": "bool", "shape": []},
            "truncated": {"dtype": "bool", "shape": []},
            "logp": {"dtype": "float32", "shape": []},
            "final_obs": observation_column(env),
        }
    if algorithm == "dqn":
        return {
            "obs": observation_column(env),
            "action": {"dtype": "int32", "shape": []},
            "reward": {"dtype": "float32", "shape": []},
            "next_obs": observation_column(env),
            "discount": {"dtype": "float32", "shape": []},
        }
    raise ValueError(f"algorithm: unknown {algorithm!r}; known: {list(ALGORITHMS)}")


def table_config(
    algorithm: str,
    env: EnvSpec,
    name: str,
    unroll_length: int,
    queue_size: int,
    dqn_capacity: int,
    replay_ratio: float = 8.0,
    batch_size: int = 128,
    chunk_length: int = 64,
    max_policy_lag: int = 0,
) -> dict:
    """The replay table ``algorithm`` learns from, as a config mapping.

    DQN's table keeps ``replay_ratio`` samples per inserted transition (a band of
    two batches or two chunks' worth either side), so neither actors nor the
    learner run away from the other.
    """
    if algorithm == "impala":
        return {
            "name": name,
            "signature": signature(algorithm, env),
            "sequence_length": unroll_length + 1,
            "max_size": queue_size,
            "selector": "fifo",
            "max_times_sampled": 1,
            **({"max_policy_lag": max_policy_lag} if max_policy_lag else {}),
            "rate_limiter": {"min_size_to_sample": 1, "samples_per_insert": 1.0, "min_diff": 0, "max_diff": queue_size},
        }
    learning_starts = 1000
    return {
        "name": name,
        "signature": signature(algorithm, env),
        "max_size": dqn_capacity,
        "selector": "prioritized",
        "priority_exponent": 0.6,
        "rate_limiter": {
            "min_size_to_sample": learning_starts,
            "samples_per_insert": replay_ratio,
            "error_buffer": max(2.0 * batch_size, 2.0 * chunk_length * replay_ratio),
        },
    }


def signature_mismatch(expected: dict[str, dict], found) -> str | None:
    """Why a table's signature (``rlrings.signature.Signature``) cannot take
    what an actor writes, or None when it can."""
    found_columns = {c.name: {"dtype": c.dtype.name, "shape": list(c.shape)} for c in found.values()}
    for name, column in expected.items():
        if name not in found_columns:
            return f"the table has no column {name!r} (it has {sorted(found_columns)})"
        if found_columns[name] != column:
            return f"column {name!r} is {found_columns[name]} in the table, the env writes {column}"
    extra = sorted(set(found_columns) - set(expected))
    return f"the table wants columns {extra} that this actor does not write" if extra else None


def replay_tables(algorithm: str, env: EnvSpec, name: str, **settings) -> list[dict]:
    """Every table a mesh playing ``env`` serves: the learner's (``settings`` as for
    :func:`table_config`), then the viewer's demonstrations."""
    return [table_config(algorithm, env, name, **settings), demonstrations_table(env)]


def demonstrations_table(env: EnvSpec, name: str = "demonstrations", max_size: int = 100_000) -> dict:
    """Steps people played in the viewer: enough for behaviour cloning
    (obs, action) and for one-step DQN transitions (reward, next_obs, terminated)."""
    return {
        "name": name,
        "signature": {
            "obs": observation_column(env),
            "action": {"dtype": "int32", "shape": []},
            "reward": {"dtype": "float32", "shape": []},
            "next_obs": observation_column(env),
            "terminated": {"dtype": "bool", "shape": []},
            "truncated": {"dtype": "bool", "shape": []},
        },
        "max_size": max_size,
        "selector": "uniform",
        "remover": "fifo",
    }

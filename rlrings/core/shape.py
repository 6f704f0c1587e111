"""The shape of a mesh: what every one of its services is told about the others.

``rlrings up`` (``rlrings.mesh.plan``) and the Helm chart give each service the same ``mesh:``
section; the services derive their own settings from it with the algorithm's hooks
(``Algorithm.actor_settings``, ``Algorithm.learner_settings``, ``rlrings.core.experience.mesh_tables``),
so a pod and a local process given the same values run the same settings. No PyTorch here: the
replay service reads it too.
"""

from __future__ import annotations

import pydantic


class MeshShape(pydantic.BaseModel):
    """The shape of a mesh, as every one of its services is told it: ``rlrings up`` and the Helm
    chart give each the same section (``mesh:``), from which an actor derives its own exploration
    and seed, the learner its learning-rate decay and replay its tables (``rlrings.planning``)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    actors: pydantic.PositiveInt = 1
    """Actor processes (pods)."""
    envs_per_actor: pydantic.PositiveInt = 8
    """Environments each actor steps as one vector."""
    learners: pydantic.PositiveInt = 1
    """Learner ranks (batch_size is per rank)."""
    batch_size: pydantic.PositiveInt | None = None
    """Items per learner update; None: the algorithm's default."""
    max_env_steps: pydantic.NonNegativeInt = 0
    """The run's env-step budget, all actors together: algorithms that anneal decay their learning
    rate to 0 over the updates it allows; 0: no budget, a constant rate."""
    epsilon_decay_env_steps: pydantic.NonNegativeInt = 100_000
    """Algorithms with epsilon exploration (dqn): env steps, all actors together, over which it
    falls from 1 to each actor's final epsilon."""
    seed: int = 0
    """Seed of the run; actor i uses seed + 1000 * i."""

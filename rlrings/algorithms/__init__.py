"""Learning algorithms, one module each, behind one registry.

Each module (``impala``, ``dqn``, ``ppo``, ``appo``, ``sac``, ``bc``) owns its settings,
its replay table, its acting half and its learning half (``base.Algorithm``);
:data:`REGISTRY` is the only list of them: the CLI's choices, the settings'
``algorithm:`` union and the chart's schema come from it (the last is checked
by a test). Adding an algorithm is its module, one line here, and its tests.
Nothing in this package knows about gRPC.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

import pydantic

from rlrings.algorithms import appo, bc, dqn, impala, ppo, sac
from rlrings.algorithms.base import Algorithm, AlgorithmConfig
from rlrings.errors import ConfigError

REGISTRY: dict[str, Algorithm] = {
    module.ALGORITHM.name: module.ALGORITHM for module in (impala, dqn, ppo, appo, sac, bc)
}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def get(name: str) -> Algorithm:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"algorithm: unknown {name!r}; known: {list(NAMES)}") from None


def _by_name(value: Any) -> Any:
    """``algorithm: impala`` is short for ``algorithm: {name: impala}``; no name means impala."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict) and "name" not in value:
        return {"name": "impala", **value}
    return value


def _tagged(config: type[AlgorithmConfig], name: str):
    return Annotated[config, pydantic.Tag(name)]


def _discriminator(value: Any) -> str | None:
    return value.get("name") if isinstance(value, dict) else getattr(value, "name", None)


AlgorithmSettings = Annotated[
    Union[tuple(_tagged(algorithm.Config, name) for name, algorithm in REGISTRY.items())],  # noqa: UP007
    pydantic.Discriminator(_discriminator),
    pydantic.BeforeValidator(_by_name),
]
"""The ``algorithm:`` setting: one of the registry's configs, chosen by its ``name``."""

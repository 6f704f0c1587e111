"""Learning algorithms, one module each, behind one registry.

Each module (``impala``, ``dqn``, ``ppo``, ``appo``, ``sac``, ``bc``) owns its settings,
its replay table, its acting half and its learning half (``api.Algorithm``);
:data:`REGISTRY` is the only list of them: the CLI's choices, the settings'
``algorithm:`` union and the chart's schema come from it (the last is checked
by a test). Adding an algorithm is its module, one line here, and its tests.
Nothing in this package knows about gRPC.
"""

from __future__ import annotations

import difflib
import json
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pydantic
import pydantic.fields

from rlrings.algorithms import appo, bc, dqn, impala, ppo, sac
from rlrings.algorithms.api import Algorithm, AlgorithmConfig
from rlrings.core.errors import ConfigError
from rlrings.core.text import plain

REGISTRY: dict[str, Algorithm] = {
    module.ALGORITHM.name: module.ALGORITHM for module in (impala, dqn, ppo, appo, sac, bc)
}
NAMES: tuple[str, ...] = tuple(REGISTRY)


DEFAULT = "appo"
"""The algorithm when none is named: the only place it is named (the chart's values leave it out)."""


def default_config() -> AlgorithmConfig:
    """The default algorithm at its defaults."""
    return REGISTRY[DEFAULT].config()


def get(name: str) -> Algorithm:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"algorithm: {unknown(name)}") from None


def unknown(name: Any) -> str:
    return f"unknown algorithm {name!r}; choose one of: {', '.join(NAMES)}"


def _by_name(value: Any) -> Any:
    """``algorithm: impala`` is short for ``algorithm: {name: impala}``; no name means the default.
    An unknown name, or a key the named algorithm does not have, is refused saying what would do."""
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, dict):
        value = {"name": DEFAULT, **value}
        if value["name"] not in REGISTRY:
            raise ValueError(unknown(value["name"]))
        fields = REGISTRY[value["name"]].Config.model_fields
        foreign = [key for key in value if key not in fields]
        if len(foreign) == 1 and (close := difflib.get_close_matches(foreign[0], list(fields), n=1)):
            raise ValueError(f"{foreign[0]!r} is not a setting of {value['name']}; did you mean {close[0]!r}?")
        if foreign:
            others = sorted(n for n, a in REGISTRY.items() if all(key in a.Config.model_fields for key in foreign))
            elsewhere = f" (a setting of {', '.join(others)})" if others else ""
            raise ValueError(
                f"{', '.join(map(repr, foreign))} {'is not a setting' if len(foreign) == 1 else 'are not settings'} "
                f"of {value['name']}{elsewhere}; {value['name']}'s settings: "
                f"{', '.join(key for key in fields if key != 'name')} (rlrings algorithms {value['name']})"
            )
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


_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _bounds(constraints) -> str:
    return "".join(
        f" {sign} {getattr(constraint, attribute)}"
        for constraint in constraints
        for attribute, sign in _BOUNDS.items()
        if getattr(constraint, attribute, None) is not None
    )


def _type_name(annotation: Any) -> str:
    """A type as help shows it: ``int > 0``, ``float | None``, ``'fifo' | 'uniform'``, ``list[int > 0]``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0]) + _bounds(args[1:])
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is Literal:
        return " | ".join(map(repr, args))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in args)}]"
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def setting_type(field: pydantic.fields.FieldInfo) -> str:
    """A setting's type as help and the docs show it, bounds included (``int > 0``, ``float | None``)."""
    return _type_name(field.annotation) + _bounds(field.metadata)


def _description(config: type[pydantic.BaseModel], key: str) -> str:
    """A setting's docstring, from the class that last documented it (a subclass may change only its default)."""
    for cls in config.__mro__:
        field = getattr(cls, "model_fields", {}).get(key)
        if field is not None and field.description:
            return " ".join(plain(field.description).split())
    return ""


def settings_table(name: str) -> list[tuple[str, str, str, str]]:
    """(flag, type, default, description) of each of algorithm ``name``'s settings, from its Config."""
    config = REGISTRY[name].Config
    rows = []
    for key, field in config.model_fields.items():
        if key == "name":
            continue
        default = field.get_default(call_default_factory=True)
        kind = setting_type(field)
        doc = _description(config, key)
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("live"):
            doc += f" Changeable while the {field.json_schema_extra['live']} runs (UpdateConfig)."
        rows.append((f"--algorithm.{key.replace('_', '-')}", kind, json.dumps(default), doc))
    return rows


class TakesAlgorithm:
    """Mixed into the settings of a command that takes ``--algorithm`` and ``--env`` (the mesh, the
    learner, the actor): the ``algorithm`` section is composed from every source by
    ``rlrings.rpc.config.load_config``, and ``--help`` ends with the algorithms and the env families."""

    sections = ("algorithm",)

    @classmethod
    def epilog(cls, chosen: dict[str, dict[str, Any]]) -> str:
        from rlrings.envs import describe_families

        name = chosen.get("algorithm", {}).get("name")
        return f"{describe(name)}\n\nenvironments (--env):\n{describe_families()}"


def describe(name: str | None = None, width: int = 100) -> str:
    """Help on the algorithms: every one with its action spaces and summary; with ``name``, its
    settings and their defaults besides (what ``rlrings up --help`` and ``rlrings algorithms`` show)."""
    import textwrap

    lines = ["algorithms (--algorithm NAME; then --algorithm.SETTING VALUE; 'rlrings algorithms NAME' lists "
             "an algorithm's settings):"]  # fmt: skip
    for algorithm in REGISTRY.values():
        spaces = " or ".join(kind.__name__ for kind in algorithm.action_spaces)
        default = " (default)" if algorithm.name == DEFAULT else ""
        lines.append(f"  {algorithm.name:<7} {spaces:<16} {algorithm.summary}{default}")
    if name is None:
        return "\n".join(lines)
    if name not in REGISTRY:
        return "\n".join([*lines, "", unknown(name)])
    lines += ["", f"settings of {name} (defaults as {name} has them):"]
    for flag, kind, default, doc in settings_table(name):
        lines.append(f"  {flag} {kind}  (default {default})")
        lines += textwrap.wrap(doc, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    for family, preset in REGISTRY[name].presets.items():
        given = ", ".join(f"--algorithm.{key.replace('_', '-')} {json.dumps(value)}" for key, value in preset.items())
        lines.append(f"  on {family} envs, where not given: {given}")
    return "\n".join(lines)


def values_schema() -> dict:
    """The JSON schema of the chart's ``algorithm`` value (``helm/rlrings/values.schema.json``), from the
    registry: a name it has and, for that algorithm (the default where none is named), only its
    settings with their types and bounds, so ``helm install`` refuses what the pods would."""

    def settings(name: str) -> dict:
        schema = REGISTRY[name].Config.model_json_schema()
        fields = {key: value for key, value in schema["properties"].items() if key != "name"}
        keep = ("type", "anyOf", "enum", "items", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        typed = {key: {k: v for k, v in value.items() if k in keep} for key, value in fields.items()}
        return {"propertyNames": {"enum": ["name", *fields]}, "properties": typed}

    rules = [
        {"if": {"required": ["name"], "properties": {"name": {"const": name}}}, "then": settings(name)}
        for name in REGISTRY
    ]
    rules.append({"if": {"not": {"required": ["name"]}}, "then": settings(DEFAULT)})
    return {
        "type": "object",
        "description": "The algorithm (name; none: the default) and the settings given to it; others are refused",
        "properties": {"name": {"type": "string", "enum": list(NAMES)}},
        "allOf": rules,
    }

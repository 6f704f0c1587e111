"""Reference text written from the code's own docstrings, so that the docs, ``--help`` and the chart
cannot drift apart.

Three readers take a setting's description from the one docstring under its field:

- ``rlrings <service> --help`` (pydantic-settings reads the attribute docstrings itself);
- the documentation site: this module is also an MkDocs hook (``mkdocs.yml``), which replaces a
  marker line such as ``<!-- rlrings:settings service=replay -->`` or
  ``<!-- rlrings:settings algorithm=appo -->`` with the settings table of that class (field, type,
  default, description), ``<!-- rlrings:algorithms -->`` with the registry's table and
  ``<!-- rlrings:scopes -->`` with the scope each RPC needs;
- the README's algorithm table and the chart's ``values.yaml`` comments, which are files in the
  repository: ``python -m rlrings.ops.docs`` rewrites them, ``--check`` fails when they are stale
  (``make test`` runs the check).
"""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic_settings import CLI_SUPPRESS

from rlrings.algorithms import setting_type

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VALUES = ROOT / "helm" / "rlrings" / "values.yaml"
CARTPOLE_FIGURES = ROOT / "bench" / "figures" / "cartpole.yaml"

SERVICE_CONFIGS = {
    "up": "rlrings.mesh.config:MeshConfig",
    "replay": "rlrings.services.replay.config:ReplayConfig",
    "parameter": "rlrings.services.parameter.config:ParameterConfig",
    "actor": "rlrings.services.actor.config:ActorConfig",
    "learner": "rlrings.services.learner.config:LearnerConfig",
    "inference": "rlrings.services.inference.config:InferenceConfig",
    "viewer": "rlrings.services.viewer.config:ViewerConfig",
    "table": "rlrings.services.replay.config:TableConfig",
    "rate_limiter": "rlrings.services.replay.config:RateLimiterConfig",
    "cassandra": "rlrings.services.replay.config:CassandraConfig",
    "mesh": "rlrings.core.shape:MeshShape",
}
"""The settings classes a docs page may ask for by name (``service=NAME``)."""

VALUES_SECTIONS = {
    "": ("mesh", "up"),
    "replay": ("replay",),
    "parameter": ("parameter",),
    "learner": ("learner", "mesh"),
    "actor": ("actor",),
    "inference": ("inference",),
    "viewer": ("viewer",),
    "cassandra": ("cassandra",),
}
"""Where a key of the chart's values finds its setting: the section's key in camelCase is the field
in snake_case of the first of these classes that has it (keys of Kubernetes' own, such as
``resources``, have none and keep the chart's words)."""

CHART_OWN = {".env", ".algorithm", "replay.tables"}
"""Keys whose settings' docstrings speak of the command line (flags, JSON lists); the chart says what
they mean in values instead."""

MARKER = re.compile(
    r"^<!-- rlrings:(?P<what>settings|algorithms|scopes)(?: (?P<key>service|algorithm)=(?P<name>[\w-]+))? -->$", re.M
)


def settings_class(name: str) -> type[pydantic.BaseModel]:
    module, _, attribute = SERVICE_CONFIGS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


# -- one setting, as every reader shows it


@dataclass(frozen=True)
class Setting:
    name: str
    """Dotted, as the flag spells it in snake_case (``tls.cert_file``)."""
    type: str
    default: str
    description: str
    flag: bool
    """False for settings given only in a file or the environment (nested sections such as ``mesh``)."""


def description(field: pydantic.fields.FieldInfo) -> str:
    """The docstring under a field, on one line, with reStructuredText's literals as Markdown's."""
    text = " ".join((field.description or "").split())
    return text.replace("``", "`")


def default_text(field: pydantic.fields.FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, pydantic.BaseModel):
        return "see below" if len(type(value).model_fields) else "{}"
    if isinstance(value, pydantic.SecretStr):
        return "secret"
    if isinstance(value, Path):
        value = str(value)
    return (
        "None"
        if value is None
        else yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    )


def _suppressed(field: pydantic.fields.FieldInfo) -> bool:
    return CLI_SUPPRESS in field.metadata


def _nested_model(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The settings class of a section such as ``tls`` (``TlsConfig | None``), else None."""
    if typing.get_origin(annotation) not in (None, typing.Union, types.UnionType):
        return None  # a list of sections (replay's tables) is described on its own
    candidates = typing.get_args(annotation) or (annotation,)
    models = [arg for arg in candidates if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel)]
    return models[0] if len(models) == 1 and len(candidates) <= 2 else None


def settings(model: type[pydantic.BaseModel], prefix: str = "") -> Iterator[Setting]:
    """Every setting of ``model`` in declaration order; a nested section's own settings follow it."""
    for name, field in model.model_fields.items():
        flag = not _suppressed(field)
        yield Setting(f"{prefix}{name}", setting_type(field), default_text(field), description(field), flag)
        nested = _nested_model(field.annotation)
        if nested is not None and flag:
            yield from settings(nested, f"{prefix}{name}.")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_table(model: type[pydantic.BaseModel], *, flags: bool = True) -> str:
    """A Markdown table of ``model``'s settings: the flag (or, for a file-only section, the key), the
    type, the default and the docstring."""
    rows = ["| setting | type | default | description |", "| --- | --- | --- | --- |"]
    for setting in settings(model):
        key = f"`--{setting.name.replace('_', '-')}`" if flags and setting.flag else f"`{setting.name}`"
        if flags and not setting.flag:
            key += " (file or environment)"
        rows.append(
            f"| {key} | {_cell(setting.type)} | `{_cell(setting.default)}` | {_cell(setting.description)} |"
            if setting.default not in ("required", "see below")
            else f"| {key} | {_cell(setting.type)} | {setting.default} | {_cell(setting.description)} |"
        )
    return "\n".join(rows)


def algorithm_settings_table(name: str) -> str:
    """An algorithm's settings as ``rlrings algorithms NAME`` prints them (one source:
    ``rlrings.algorithms.settings_table``), as a Markdown table keyed as a config file spells them
    (``learning_rate``; the flag is ``--algorithm.learning-rate``)."""
    from rlrings import algorithms

    algorithms.get(name)  # an unknown name is refused naming the choices
    rows = ["| setting | type | default | description |", "| --- | --- | --- | --- |"]
    for flag, kind, default, doc in algorithms.settings_table(name):
        key = flag.removeprefix("--algorithm.").replace("-", "_")
        rows.append(f"| `{key}` | {_cell(kind)} | `{_cell(default)}` | {_cell(doc)} |")
    return "\n".join(rows)


# -- the algorithm table


def cartpole_figures() -> dict[str, Any]:
    """The CartPole-v1 figures of record (``bench/figures/cartpole.yaml``: where, when and how they
    were measured, and each algorithm's median env steps and seconds to solve)."""
    return yaml.safe_load(CARTPOLE_FIGURES.read_text())


def algorithm_table(*, link: str, pages: str) -> str:
    """The registry as a table: name, action spaces, what it learns from, and its CartPole-v1 figure
    (``link`` is where the figure's run is described and ``pages`` the algorithms' pages, both
    relative to the page the table is on)."""
    from rlrings import algorithms

    figures = cartpole_figures()
    rows = [
        f"| algorithm | actions | what it is | CartPole-v1: env steps to solve ([measured]({link})) |",
        "| --- | --- | --- | --- |",
    ]
    for name, algorithm in algorithms.REGISTRY.items():
        spaces = ", ".join(space.__name__ for space in algorithm.action_spaces)
        default = " (default)" if name == algorithms.DEFAULT else ""
        figure = figures["algorithms"].get(name, {})
        solved = (
            f"{figure['env_steps']:,} in {figure['seconds']} s" if "env_steps" in figure else figure.get("note", "-")
        )
        rows.append(
            f"| [`{name}`]({pages}{name}.md){default} | {spaces} | {' '.join(algorithm.summary.split())} | {solved} |"
        )
    return "\n".join(rows)


def scopes_table() -> str:
    """Which scope a token needs for each RPC (``rlrings.rpc.security.METHOD_SCOPES``, what servers check)."""
    from rlrings.rpc.security import METHOD_SCOPES, SCOPES

    rows = ["| scope | lets a token call |", "| --- | --- |"]
    for scope in SCOPES:
        methods = [
            method.removeprefix("/rlrings.v1.").replace("/", ".")
            for method, needs in METHOD_SCOPES.items()
            if scope == needs or (isinstance(needs, tuple) and scope in needs)
        ]
        rows.append(f"| `{scope}` | {', '.join(f'`{method}`' for method in methods)} |")
    return "\n".join(rows)


# -- the MkDocs hook


def render(markdown: str, *, up: str = "../") -> str:
    """``markdown`` with every marker replaced by the table it names (``up``: the way from the page
    to the site's root)."""

    def table(match: re.Match) -> str:
        if match["what"] == "scopes":
            return scopes_table()
        if match["what"] == "algorithms":
            return algorithm_table(link=f"{up}benchmarks/learning.md", pages=f"{up}algorithms/")
        if match["key"] == "algorithm":
            return algorithm_settings_table(match["name"])
        name = match["name"]
        return settings_table(
            settings_class(name), flags=name in ("up", "replay", "parameter", "actor", "learner", "inference", "viewer")
        )

    return MARKER.sub(table, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs' hook: the page with its settings tables filled in."""
    return render(markdown, up="../" * page.file.src_uri.count("/"))


# -- the README's table and the chart's comments

BEGIN, END = (
    "<!-- rlrings:algorithms:begin (python -m rlrings.ops.docs writes this table) -->",
    "<!-- rlrings:algorithms:end -->",
)


def readme(text: str) -> str:
    """The README with its algorithm table rewritten from the registry."""
    head, found, rest = text.partition(BEGIN)
    if not found:
        raise SystemExit(f"README.md has no {BEGIN!r}")
    _, _, tail = rest.partition(END)
    table = algorithm_table(link="docs/benchmarks/learning.md", pages="docs/algorithms/")
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def values_field(section: str, key: str) -> pydantic.fields.FieldInfo | None:
    """The setting behind ``section.key`` of the chart's values, or None for a key of the chart's own."""
    snake = _camel_to_snake(key)
    for name in VALUES_SECTIONS.get(section, ()):
        field = settings_class(name).model_fields.get(snake)
        if field is not None and field.description:
            return field
    return None


def values(text: str, width: int = 110) -> str:
    """The chart's values with the ``# --`` comment of every key that is a setting rewritten from
    that setting's docstring (top-level keys and the first level of each section)."""
    lines = text.split("\n")
    out: list[str] = []
    section = ""
    for line in lines:
        match = re.match(r"^(?P<indent> {0,2})(?P<key>[A-Za-z]\w*):(?P<value>.*)$", line)
        if match and not line.startswith("#"):
            indent, key = match["indent"], match["key"]
            if indent == "":
                section = key
            where = "" if indent == "" else section
            has_value = match["value"].split("#")[0].strip() != ""  # a section (a mapping below) has none
            field = values_field(where, key) if has_value and f"{where}.{key}" not in CHART_OWN else None
            if field is not None:
                while out and out[-1].lstrip().startswith("#") and len(out[-1]) - len(out[-1].lstrip()) == len(indent):
                    out.pop()
                wrapped = textwrap.wrap(description(field), width - len(indent) - 5)
                out.append(f"{indent}# -- {wrapped[0]}")
                out.extend(f"{indent}# {part}" for part in wrapped[1:])
        out.append(line)
    return "\n".join(out)


class DocsCommand(pydantic.BaseModel):
    """Rewrites the README's and values.yaml's generated parts from the docstrings."""

    model_config = pydantic.ConfigDict(use_attribute_docstrings=True, extra="forbid")

    check: bool = False
    """Change nothing; exit 1 when a file is stale."""


def main(argv: list[str] | None = None) -> int:
    from pydantic_settings import CliApp, CliSettingsSource

    parser = CliSettingsSource(DocsCommand, cli_prog_name="python -m rlrings.ops.docs", cli_implicit_flags=True)
    arguments = CliApp.run(DocsCommand, cli_args=sys.argv[1:] if argv is None else argv, cli_settings_source=parser)
    stale = []
    for path, rewrite in ((README, readme), (VALUES, values)):
        old = path.read_text()
        new = rewrite(old)
        if new != old:
            stale.append(path.relative_to(ROOT))
            if not arguments.check:
                path.write_text(new)
    if stale and arguments.check:
        print(f"docs: {', '.join(map(str, stale))} differ from the docstrings; run 'make docs'", file=sys.stderr)
        return 1
    print(f"docs: {'rewrote ' + ', '.join(map(str, stale)) if stale else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

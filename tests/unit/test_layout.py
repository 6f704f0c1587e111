"""The layout keeps its promises: no import circles, no service importing another, and an
RL core (spaces, distributions, models, algorithms, envs, the ring) that knows nothing of
gRPC or protobuf; ``rlrings.rpc.wire`` converts at the edge."""

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ("rlrings.core", "rlrings.algorithms", "rlrings.envs")
WIRE = ("grpc", "grpc_health", "grpc_reflection", "google.protobuf", "rlrings.v1", "rlrings.rpc", "rlrings.clients")
WINGS = ("rpc", "clients", "core", "algorithms", "envs", "mesh", "fewshot", "ops", "v1")
"""The packages of the library root: gRPC plumbing, clients, the RL core and its algorithms and envs,
the local mesh, the few-shot experiments, operations (the CLI, processes, the cloud), generated code."""


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in (("rlrings", "rlrings"), ("services", "rlrings.services")):  # as pyproject maps them
        for path in (ROOT / folder).rglob("*.py"):
            if "v1" in path.relative_to(ROOT).parts:
                continue
            parts = [package, *path.relative_to(ROOT / folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


@functools.cache
def imports(module: str) -> frozenset[str]:
    """Every module ``module`` imports: at the top, inside a function, or for annotations only."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):  # type-only imports (under TYPE_CHECKING) count: a circle is a circle
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(MODULES)
            # ``from package import module`` runs the package's __init__ first, as any import of a
            # submodule does: that is nesting, not a circle, so only the submodule counts
            out.update(submodules or {base})
    return frozenset(out)


def project_imports(module: str) -> set[str]:
    return {name for name in imports(module) if name in MODULES and name != module}


def reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for name in project_imports(todo.pop()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def test_no_import_circles():
    circles = sorted(f"{a} <-> {b}" for a in MODULES for b in project_imports(a) if a in reachable(b) and a < b)
    assert not circles, circles


def test_no_service_imports_another():
    crossings = [
        (module, name)
        for module in MODULES
        if module.startswith("rlrings.services.")
        for name in project_imports(module)
        if name.startswith("rlrings.services.") and name.split(".")[2] != module.split(".")[2]
    ]
    assert not crossings


def test_the_rl_core_knows_nothing_of_grpc_or_protobuf():
    core = [m for m in MODULES if m.startswith(CORE)]
    assert "rlrings.algorithms.ppo" in core and "rlrings.envs.tasks" in core
    for module in core:
        for name in reachable(module) | {module}:
            wire = [i for i in imports(name) if i.startswith(WIRE)]
            assert not wire, f"{module} reaches {name}, which imports {wire}"


def test_the_root_holds_only_wings():
    """The tree shows the architecture: every module of the library sits in a wing (the root holds
    only its package marker), and each wing says in a docstring why it exists."""
    root = ROOT / "rlrings"
    loose = sorted(p.name for p in root.glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules at the root of rlrings/, outside a wing: {loose}"
    packages = sorted(p.name for p in root.iterdir() if (p / "__init__.py").exists())
    assert packages == sorted(WINGS)
    for wing in WINGS:
        assert ast.get_docstring(ast.parse((root / wing / "__init__.py").read_text())), wing


def test_one_command_line_parser():
    """Every command (the services, rlrings up, the tool commands, rlrings cloud, the docs tool)
    parses its flags with pydantic-settings from typed models; argparse appears only where
    rlrings.rpc.config hands pydantic-settings the parser it formats help with."""
    direct = sorted(name for name in MODULES if "argparse" in imports(name))
    assert direct == ["rlrings.rpc.config"], direct

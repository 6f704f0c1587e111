"""Test data builders."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np

from rlrings.services.replay.config import TableConfig

FRAME_SIGNATURE = {
    "obs": {"dtype": "uint8", "shape": [8, 8, 3]},
    "action": {"dtype": "int32"},
    "reward": {"dtype": "float32"},
}


def table(name: str = "t", **overrides) -> dict:
    """A table config as a plain dict, as it would appear in a config file."""
    return {"name": name, "signature": FRAME_SIGNATURE, "max_size": 1000, **overrides}


def table_config(name: str = "t", **overrides) -> TableConfig:
    return TableConfig(**table(name, **overrides))


def frames(steps: int, start: int = 0) -> dict[str, np.ndarray]:
    """A chunk for FRAME_SIGNATURE whose action column counts steps from ``start``."""
    rng = np.random.default_rng(start)
    return {
        "obs": rng.integers(0, 256, size=(steps, 8, 8, 3), dtype=np.uint8),
        "action": np.arange(start, start + steps, dtype=np.int32),
        "reward": np.full(steps, 0.5, dtype=np.float32),
    }


ROOT = Path(__file__).resolve().parents[1]
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")))
"""The front page and the documentation: every code block in them that a user would copy is marked
``<!-- snippet: NAME -->`` and run by a test (``snippet("NAME")``), or marked ``<!-- not run: why -->``."""
SNIPPET = re.compile(r"^<!-- snippet: (?P<name>[\w-]+) -->\n```(?P<language>\w*)\n(?P<text>.*?)^```$", re.M | re.S)


def snippets() -> dict[str, list[tuple[Path, str]]]:
    """Every marked block, by name: where it is and its text."""
    found: dict[str, list[tuple[Path, str]]] = {}
    for page in PAGES:
        for match in SNIPPET.finditer(page.read_text()):
            found.setdefault(match["name"], []).append((page, match["text"]))
    return found


def snippet(name: str) -> str:
    """The text of the block marked ``<!-- snippet: NAME -->``; a name on several pages marks the
    same text on each (a test checks that), so running one runs them all."""
    (text,) = {text for _, text in snippets()[name]}
    return text


def run_shell_snippet(name: str, cwd: Path, *, env: dict | None = None, timeout: float = 600,
                      substitute: dict[str, str] | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """Runs a shell block as written, line after line, stopping at the first failure, with the
    repository's ``.venv`` and its commands at hand in ``cwd``: ``source .venv/bin/activate`` works
    there, ``make`` runs the repository's Makefile. ``substitute`` replaces text a reader would change
    (an address, a placeholder id, a budget the test bounds)."""
    script = snippet(name)
    for old, new in (substitute or {}).items():
        assert old in script, f"{name}: {old!r} is not in the block"
        script = script.replace(old, new)
    venv = cwd / ".venv"
    if not venv.exists():
        venv.symlink_to(ROOT / ".venv")
    make = f'make() {{ command make -C "{ROOT}" "$@"; }}'
    prologue = f'set -euo pipefail\n{make}\nexport PATH="{ROOT / ".venv" / "bin"}:$PATH"\n'
    return subprocess.run(["bash", "-c", prologue + script], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})  # fmt: skip


def ring_backends():
    """The learner ring's backends to test: torch always; horovod where it is installed. `make test`
    sets RLRINGS_REQUIRE_HOROVOD=1, so there a missing Horovod fails instead of skipping."""
    import os

    import pytest

    from rlrings.core.ring import HOROVOD_HINT, horovod_available

    required = os.environ.get("RLRINGS_REQUIRE_HOROVOD") == "1"
    skip = pytest.mark.skipif(not horovod_available() and not required, reason=HOROVOD_HINT)
    return ["torch", pytest.param("horovod", marks=skip)]

"""What the deployment checks share: the repository root and the Kubernetes version
the chart is validated for, which is the one Terraform deploys."""

from __future__ import annotations

import os
from pathlib import Path

import hcl2
import helm_python
import yaml

from rlrings.fewshot import FewShotConfig
from rlrings.services.actor.config import ActorConfig
from rlrings.services.inference.config import InferenceConfig
from rlrings.services.learner.config import LearnerConfig
from rlrings.services.parameter.config import ParameterConfig
from rlrings.services.replay.config import ReplayConfig
from rlrings.services.viewer.config import ViewerConfig

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
# Where `make tools` puts terraform and helm (TOOLS_DIR in the Makefile)
TOOLS_BIN = Path(os.environ.get("RLRINGS_TOOLS", Path.home() / ".cache" / "rlrings")) / "bin"


def plain(value):
    """python-hcl2's output without its quoting: '"text"' becomes 'text', keys too."""
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def terraform_file(name: str) -> dict:
    with (TERRAFORM / name).open() as f:
        return plain(hcl2.load(f))


def terraform_variables() -> dict[str, dict]:
    return {name: body for block in terraform_file("variables.tf")["variable"] for name, body in block.items()}


def terraform_resources() -> dict[str, dict]:
    """Resources of main.tf by "type.name"."""
    return {
        f"{kind}.{name}": body
        for block in terraform_file("main.tf")["resource"]
        for kind, named in block.items()
        for name, body in named.items()
    }


def _kubernetes_version() -> str:
    return f"{terraform_variables()['kubernetes_version']['default']}.0"


KUBERNETES_VERSION = _kubernetes_version()


CHART = ROOT / "helm" / "rlrings"
CONFIGS = {
    "FEWSHOT": FewShotConfig,
    "REPLAY": ReplayConfig,
    "PARAMETER": ParameterConfig,
    "LEARNER": LearnerConfig,
    "ACTOR": ActorConfig,
    "VIEWER": ViewerConfig,
    "INFERENCE": InferenceConfig,
}


def render(values: dict | None, namespace: str = "rl") -> list[dict]:
    chart = helm_python.Chart.load(CHART)
    try:
        manifests = chart.render(values, name="demo", namespace=namespace)
    finally:
        chart.close()
    objects = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]

"""The Dockerfiles agree with the chart: every rlrings image the chart pulls has one, its
entry point is the `rlrings` command the chart's args complete, and base images are pinned.
(There is no Docker engine here; the images are built by `rlrings cloud up` in ACR.)"""

from __future__ import annotations

import json
import re

import yaml

from rlrings.ops.cli import SERVICES
from tests.deploy.helpers import ROOT

VALUES = yaml.safe_load((ROOT / "helm" / "rlrings" / "values.yaml").read_text())


def dockerfile(service: str) -> str:
    return (ROOT / "services" / service / "Dockerfile").read_text()


def instruction(text: str, name: str) -> list[str]:
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return json.loads(line[len(name) + 1 :])


def test_every_chart_image_has_a_dockerfile_whose_command_the_chart_runs():
    for service in SERVICES:
        repository = VALUES[service]["image"]["repository"]
        assert repository == f"rlrings/{service}"
        text = dockerfile(service)
        entrypoint, command = instruction(text, "ENTRYPOINT"), instruction(text, "CMD")
        assert entrypoint[-1] == "rlrings", f"{service}: the chart's args follow the rlrings command"
        assert command == [service]
        template = (ROOT / "helm" / "rlrings" / "templates" / service).glob("*.yaml")
        assert any(f"args: [{service}]" in t.read_text() for t in template), f"{service}: chart runs another command"


def test_base_images_are_pinned_and_containers_do_not_run_as_root():
    for service in SERVICES:
        text = dockerfile(service)
        for base in re.findall(r"^FROM (\S+)", text, flags=re.M):
            assert re.search(r":[0-9][\w.-]*$", base), f"{service}: base image {base} is not pinned to a version"
        assert re.search(r"^USER 65532", text, flags=re.M), f"{service}: no unprivileged USER"


def test_learner_image_builds_horovod_with_nccl_and_the_actor_has_minerl_java_and_xvfb():
    learner = dockerfile("learner")
    assert "docker/build-horovod.sh" in learner and "nvidia/cuda" in learner and "libnccl-dev" in learner
    actor = dockerfile("actor")
    assert "temurin:8" in actor and "xvfb" in actor and "minerl" in actor


def test_every_image_copies_every_folder_the_package_is_built_from():
    """`pip install .` in an image reads pyproject.toml, whose packages map these folders."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {path.split("/")[0] for path in project["package-dir"].values()} - {"."} | {"rlrings"}
    for service in SERVICES:
        copied = {
            name.split("/")[0]
            for line in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile(service), flags=re.M)
            for name in line.split()
        }
        assert folders <= copied, f"{service}'s Dockerfile does not copy {sorted(folders - copied)}"
        assert {"pyproject.toml", "README.md"} <= copied

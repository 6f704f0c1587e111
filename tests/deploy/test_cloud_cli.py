"""`rlrings cloud` as a new user meets it: a dry run that prints every step and changes
nothing, clear refusals of bad IDs and missing tools, and the chart check it runs through
pyhelm3 with a real helm binary where one is installed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlrings.ops.cli import SERVICES
from tests.deploy.helpers import ROOT, TOOLS_BIN

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
TENANT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
IDS = ("--subscription-id", SUBSCRIPTION, "--tenant-id", TENANT)


def cloud(*args: str, path: str | None = None, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "COLUMNS": "200"}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "rlrings.ops.cli", "cloud", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_dry_run_prints_every_step_and_command_and_touches_nothing(tmp_path):
    result = cloud(
        "up",
        *IDS,
        "--dry-run",
        "--api-access",
        "203.0.113.7/32",
        home=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "nothing is changed" in out
    for command in (
        f"az account set --subscription {SUBSCRIPTION}",
        "terraform -chdir=",
        "init -input=false",
        "apply -input=false -auto-approve",
        "output -json",
        "az aks get-credentials",
        "kubelogin convert-kubeconfig",
        "upgrade --install rlrings",
        "test rlrings",
    ):
        assert command in out, f"{command!r} is not in the plan"
    for image in ("replay", "parameter", "learner", "actor", "viewer", "inference"):
        assert f"--image rlrings/{image}:0.1.0 --file services/{image}/Dockerfile" in out
    assert '"203.0.113.7/32"' in out and f'"tenant_id": "{TENANT}"' in out
    assert "[14/14]" in out  # (six image builds among them)
    assert not (tmp_path / ".rlrings").exists(), "a dry run wrote state"


@pytest.mark.skipif(shutil.which("helm", path=f"{TOOLS_BIN}:{os.environ['PATH']}") is None, reason="no helm binary")
def test_dry_run_renders_the_chart_with_the_users_values_through_pyhelm3(tmp_path):
    path = f"{TOOLS_BIN}:{os.environ['PATH']}"
    values = ROOT / "helm" / "rlrings" / "ci" / "gpu-ring-values.yaml"
    result = cloud(
        "up",
        *IDS,
        "--dry-run",
        "--values",
        str(values),
        path=path,
        home=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chart check: helm renders" in result.stdout and "ServiceMonitor" in result.stdout

    bad = tmp_path / "bad-values.yaml"
    bad.write_text("learner:\n  ring:\n    ranks: 0\n")
    result = cloud(
        "up",
        *IDS,
        "--dry-run",
        "--values",
        str(bad),
        path=path,
        home=tmp_path,
    )
    assert result.returncode == 1
    assert "does not render" in result.stdout and "ranks" in result.stdout


def test_missing_tools_are_named_with_how_to_install_them_and_nothing_runs(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = cloud(
        "up",
        *IDS,
        "--api-access",
        "10.0.0.0/8",
        path=str(empty),
        home=tmp_path,
    )
    assert result.returncode == 3
    out = result.stdout
    for tool in ("terraform", "az", "helm", "kubectl", "kubelogin"):
        assert tool in out
    assert "az aks install-cli" in out and "Nothing was changed" in out
    assert not (tmp_path / ".rlrings").exists()


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["up", "--subscription-id", "not-a-guid", "--tenant-id", TENANT], "is not a GUID"),
        (["up", "--subscription-id", SUBSCRIPTION], "--tenant-id"),
        (["up", *IDS, "--api-access", "everyone"], "address range"),
    ],
)
def test_bad_arguments_are_refused_naming_them(tmp_path, args, complaint):
    result = cloud(*args, "--dry-run", home=tmp_path)
    assert result.returncode == 2
    assert complaint in result.stderr


def test_down_plans_uninstall_before_destroy(tmp_path):
    result = cloud("down", *IDS, "--dry-run", home=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index("uninstall rlrings") < out.index("destroy -input=false -auto-approve")


def test_a_failed_step_says_what_was_applied_and_how_to_go_on(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("az", "helm", "kubectl", "kubelogin"):
        (tools / name).write_text("#!/bin/sh\nexit 0\n")
    # terraform init works, apply fails
    (tools / "terraform").write_text('#!/bin/sh\ncase "$*" in *init*) exit 0;; *) exit 1;; esac\n')
    for tool in tools.iterdir():
        tool.chmod(0o755)
    result = cloud("up", *IDS, "--api-access", "10.0.0.0/8", path=f"{tools}:/usr/bin:/bin", home=tmp_path)
    assert result.returncode == 1
    out = result.stdout
    assert "step 'Create or update AKS, its node pools and the registry (Terraform)' failed" in out
    assert "may have applied part of its changes" in out
    assert "Already applied: Initialise Terraform" in out
    assert f"rlrings cloud up {' '.join(IDS)} --api-access 10.0.0.0/8` again" in out
    assert "az acr build" not in out, "steps after the failure ran"


def test_the_docs_dry_run_as_written(tmp_path):
    """The Kubernetes page's dry run, with real ids in place of SUB and TENANT."""
    from tests.helpers import run_shell_snippet

    result = run_shell_snippet("cloud-dry-run", tmp_path, env={"HOME": str(tmp_path), "COLUMNS": "200"},
                               substitute={"SUB": SUBSCRIPTION, "TENANT": TENANT}, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "nothing is changed" in result.stdout and f"az account set --subscription {SUBSCRIPTION}" in result.stdout


def test_outside_a_checkout_cloud_deploys_what_the_wheel_carries(tmp_path):
    """Installed from its wheel (unpacked into a folder, as pip would install it, with no checkout
    in sight), `rlrings cloud up` plans Terraform and the chart from the package's own copies,
    lays out the images' build context first, and that context builds the very same wheel."""
    import zipfile

    uv = Path(sys.executable).with_name("uv")
    subprocess.run(
        [str(uv), "build", "--wheel", "-q", "-o", str(tmp_path / "dist"), str(ROOT)], check=True, timeout=300
    )
    (wheel,) = (tmp_path / "dist").glob("rlrings-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def installed(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "HOME": str(tmp_path), "COLUMNS": "400", "PYTHONPATH": str(site)}
        return subprocess.run([sys.executable, "-m", "rlrings.ops.cli", *args],
                              capture_output=True, text=True, env=env, cwd=elsewhere, timeout=120)  # fmt: skip

    where = installed("--version")  # (the package, not the checkout's editable install, answers)
    assert where.returncode == 0, where.stderr
    result = installed("cloud", "up", *IDS, "--dry-run", "--api-access", "203.0.113.7/32")
    assert result.returncode == 0, result.stdout + result.stderr
    out, deploy = result.stdout, site / "rlrings" / "deploy"
    assert f"terraform -chdir={deploy / 'terraform'} init" in out
    assert f"upgrade --install rlrings {deploy / 'chart'}" in out
    context = tmp_path / ".rlrings" / "cloud" / "rlrings" / "image-context"
    assert f"rlrings cloud context --out {context}" in out
    assert out.index("cloud context --out") < out.index("az acr build")
    assert f"--file services/replay/Dockerfile {context}" in out
    assert str(ROOT) not in out, "the plan points into the checkout"

    laid_out = installed("cloud", "context", "--out", str(tmp_path / "context"))
    assert laid_out.returncode == 0, laid_out.stdout + laid_out.stderr
    for service in SERVICES:  # every file each Dockerfile copies is in the context
        text = (tmp_path / "context" / "services" / service / "Dockerfile").read_text()
        for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M):
            for name in source.split():
                assert (tmp_path / "context" / name).exists(), f"{service}'s Dockerfile copies {name}, not there"
    subprocess.run([str(uv), "build", "--wheel", "-q", "-o", str(tmp_path / "rebuilt"), str(tmp_path / "context")],
                   check=True, timeout=300)  # fmt: skip
    (rebuilt,) = (tmp_path / "rebuilt").glob("rlrings-*.whl")

    def files(path: Path) -> set[str]:
        return {name for name in zipfile.ZipFile(path).namelist() if ".dist-info/" not in name}

    assert files(rebuilt) == files(wheel)

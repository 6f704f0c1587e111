"""Terraform for AKS: formatted (terraform fmt where the binary is installed), parsed with
python-hcl2 and checked for what the chart relies on (pools, taints, labels, the Kubernetes
version), and scanned by checkov with no failure except each written-down skip.

The azurerm provider cannot be downloaded here, so `terraform validate` is not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.helpers import (
    ROOT,
    TERRAFORM,
    TOOLS_BIN,
    terraform_file,
    terraform_resources,
    terraform_variables,
)

CHART_VALUES = yaml.safe_load((ROOT / "helm" / "rlrings" / "values.yaml").read_text())


def tool(name: str, *candidates: Path) -> str | None:
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)


def test_terraform_fmt_check():
    terraform = tool("terraform", TOOLS_BIN / "terraform")
    if terraform is None:
        pytest.skip("terraform is not installed (make tools builds it)")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-diff", "-recursive"],
        cwd=TERRAFORM,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CLI_CONFIG_FILE": os.devnull},
    )
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}{result.stderr}"


def test_provider_versions_are_bounded():
    (settings,) = terraform_file("versions.tf")["terraform"]
    assert re.fullmatch(r">= [\d.]+, < [\d.]+", settings["required_version"])
    (providers,) = settings["required_providers"]
    assert "azurerm" in providers
    for name, provider in providers.items():
        assert re.fullmatch(r">= [\d.]+, < [\d.]+", provider["version"]), f"{name} is not bounded above and below"


def test_every_variable_is_typed_described_and_the_risky_ones_validated():
    variables = terraform_variables()
    for name, body in variables.items():
        assert body.get("type"), f"variable {name} has no type"
        assert len(body.get("description", "")) > 10, f"variable {name} has no description"
    for name in ("subscription_id", "tenant_id", "name", "gpu_vm_size", "kubernetes_version", "cassandra_nodes"):
        assert variables[name].get("validation"), f"variable {name} is not validated"
    # The CLI needs nothing but these two.
    required = {name for name, body in variables.items() if "default" not in body}
    assert required == {"subscription_id", "tenant_id", "api_server_authorized_ip_ranges"}


def test_every_output_is_described_and_secrets_are_marked_sensitive():
    outputs = {name: body for block in terraform_file("outputs.tf")["output"] for name, body in block.items()}
    assert {"cluster_name", "registry_login_server", "resource_group"} <= set(outputs)
    for name, body in outputs.items():
        assert body.get("description"), f"output {name} has no description"
        if re.search(r"kube_config|password|secret|key", name):
            assert body.get("sensitive") is True, f"output {name} should be sensitive"


def test_pools_match_what_the_chart_schedules_on():
    resources = terraform_resources()
    pools = {
        body["node_labels"]["agentpool"]: body
        for key, body in resources.items()
        if key.startswith("azurerm_kubernetes_cluster_node_pool.")
    }
    assert set(pools) == {"gpu", "cpu", "cassandra"}
    for component in ("replay", "parameter", "actor", "viewer", "learner"):
        assert CHART_VALUES[component]["nodeSelector"]["agentpool"] in pools, component
    assert CHART_VALUES["cassandra"]["nodeSelector"]["agentpool"] in pools

    gpu = pools["gpu"]
    assert gpu["vm_size"] == "${var.gpu_vm_size}"
    assert terraform_variables()["gpu_vm_size"]["default"].startswith("Standard_NC")
    assert gpu["auto_scaling_enabled"] is True and gpu["min_count"] == 0
    locals_ = {k: v for block in terraform_file("main.tf")["locals"] for k, v in block.items()}
    assert gpu["node_taints"] == ["${local.gpu_taint}"]
    key, rest = locals_["gpu_taint"].split("=", 1)
    value, effect = rest.split(":")
    assert {"key": key, "operator": "Equal", "value": value, "effect": effect} in CHART_VALUES["learner"]["tolerations"]
    # Nothing but the GPU pool is tainted, so that everything else schedules on its own pool.
    assert all("node_taints" not in pool for name, pool in pools.items() if name != "gpu")


def test_cluster_has_workload_identity_a_registry_and_network_policies():
    resources = terraform_resources()
    cluster = resources["azurerm_kubernetes_cluster.main"]
    assert cluster["kubernetes_version"] == "${var.kubernetes_version}"
    assert cluster["oidc_issuer_enabled"] is True and cluster["workload_identity_enabled"] is True
    assert cluster["default_node_pool"][0]["only_critical_addons_enabled"] is True
    assert cluster["network_profile"][0]["network_policy"] in ("calico", "cilium", "azure")
    assert resources["azurerm_container_registry.main"]["admin_enabled"] is False
    pull = resources["azurerm_role_assignment.kubelet_acr_pull"]
    assert pull["role_definition_name"] == "AcrPull"
    assert "azurerm_container_registry.main.id" in pull["scope"]
    assert "azurerm_federated_identity_credential.workload" in resources


def test_checkov_finds_nothing_but_explained_skips():
    checkov = tool("checkov", ROOT / ".venv-checkov" / "bin" / "checkov")
    if checkov is None:
        pytest.fail("checkov is not installed: make tools creates .venv-checkov")
    result = subprocess.run(
        [checkov, "-d", str(TERRAFORM), "--framework", "terraform", "--skip-download", "--output", "json", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(result.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == [], f"checkov failures: {failed}"
    assert report["summary"]["passed"] >= 20
    skips = re.findall(r"#checkov:skip=(CKV_\w+):(.*)", "".join(p.read_text() for p in TERRAFORM.glob("*.tf")))
    assert len(skips) == report["summary"]["skipped"]
    for check, reason in skips:
        assert len(reason.strip()) > 30, f"{check} is skipped without a reason"

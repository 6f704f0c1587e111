"""The Helm chart, rendered by a real Helm engine (helm-python-sdk embeds Helm's Go SDK)
for every CI scenario, checked against the Kubernetes schemas and against rlrings itself:
every address a component dials exists as a Service port, every service config loads in
that service's settings class, GPUs go only where they are meant to, images are pinned.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml

from rlrings.fewshot import FewShotConfig
from rlrings.rpc import certs
from rlrings.rpc.config import load_config
from rlrings.rpc.security import COMPONENT_SCOPES
from tests.deploy.helpers import CHART, CONFIGS, KUBERNETES_VERSION, ROOT, by_kind, render

SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
# Custom resources that the Kubernetes schemas do not describe; checked by hand below.
CUSTOM_KINDS = {"ServiceMonitor"}


def scenario_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def pod_specs(objects: list[dict]) -> list[tuple[str, dict]]:
    """(component, pod spec) of every workload and test pod."""
    specs = []
    for o in objects:
        component = o["metadata"]["labels"]["app.kubernetes.io/component"]
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs.append((component, o["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            specs.append((component, o["spec"]))
    return specs


@pytest.fixture(scope="module", params=[None, *SCENARIOS], ids=["defaults", *(p.stem for p in SCENARIOS)])
def scenario(request) -> tuple[dict, list[dict]]:
    values = scenario_values(request.param) if request.param else {}
    return values, render(values)


def test_there_are_the_four_scenarios_the_chart_promises():
    assert {p.stem for p in SCENARIOS} == {"minimal-values", "gpu-ring-values", "external-cassandra-values",
                                           "central-inference-values"}  # fmt: skip


@pytest.mark.parametrize("path", [None, *SCENARIOS], ids=["defaults", *(p.stem for p in SCENARIOS)])
def test_helm_lint_is_clean_in_strict_mode(path):
    values = scenario_values(path) if path else None
    report = helm_python.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    assert report["errors"] == []
    # The only message allowed is Helm's wish for an icon URL.
    assert [m for m in report["messages"] if m["severity"] > 1] == []


def test_every_rendered_object_is_valid_kubernetes(scenario):
    _, objects = scenario
    assert objects
    for o in objects:
        if o["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)


def test_objects_carry_the_standard_labels(scenario):
    _, objects = scenario
    for o in objects:
        labels = o["metadata"]["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, f"{o['kind']}/{o['metadata']['name']} has no {key} label"


def test_every_address_a_component_dials_is_a_service_port(scenario):
    _, objects = scenario
    ports = {(s["metadata"]["name"], p["port"]) for s in by_kind(objects, "Service") for p in s["spec"]["ports"]}
    dialled = []
    for config_map in by_kind(objects, "ConfigMap"):
        for text in config_map.get("data", {}).values():
            dialled += re.findall(r"\b([a-z0-9-]+)\.rl\.svc:(\d+)\b", text)
    for _, spec in pod_specs(objects):
        for container in spec["containers"]:
            args = " ".join(container.get("args", []))
            dialled += re.findall(r"\b([a-z0-9-]+)\.rl\.svc:(\d+)\b", args)
    assert dialled
    for name, port in dialled:
        assert (name, int(port)) in ports, f"{name}:{port} is dialled but no Service has that port"


def test_every_service_selects_pods_that_expose_its_target_ports(scenario):
    _, objects = scenario
    pods = [
        (o["spec"]["template"]["metadata"]["labels"], o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet")
    ]
    for service in by_kind(objects, "Service"):
        selector = service["spec"]["selector"]
        matching = [spec for labels, spec in pods if selector.items() <= labels.items()]
        assert matching, f"Service {service['metadata']['name']} selects no pods"
        named = {p["name"] for spec in matching for c in spec["containers"] for p in c.get("ports", [])}
        numbered = {p["containerPort"] for spec in matching for c in spec["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if isinstance(target, str):
                assert target in named, f"{service['metadata']['name']}: no container port named {target}"
            elif service["spec"].get("clusterIP") != "None":
                assert target in numbered, f"{service['metadata']['name']}: no container port {target}"


def test_service_configs_load_in_the_services_own_settings(scenario, monkeypatch, tmp_path):
    values, objects = scenario
    ca = certs.make_ca(tmp_path / "tls")
    pair = certs.issue(ca, tmp_path / "tls", "tls", ["localhost"])
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump([{"name": "game", "token": "x" * 24, "scopes": ["insert"]}]))
    secret_files = {"ca.crt": ca.cert_file, "tls.crt": pair.cert_file, "tls.key": pair.key_file, "tokens.yaml": tokens}
    config_maps = {c["metadata"]["name"]: c["data"] for c in by_kind(objects, "ConfigMap")}
    checked = set()
    for _, spec in pod_specs(objects):
        for container in spec["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            prefixes = [p for p in CONFIGS if f"RLRINGS_{p}_CONFIG" in env]
            if not prefixes:
                continue
            (prefix,) = prefixes
            mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
            volume = next(v for v in spec["volumes"] if v["name"] == "config")
            path = Path(env[f"RLRINGS_{prefix}_CONFIG"]["value"])
            assert path.parent == Path(mount["mountPath"])
            local = tmp_path / f"{prefix.lower()}.yaml"
            local.write_text(config_maps[volume["configMap"]["name"]][path.name])
            for name, var in env.items():
                if name.startswith(f"RLRINGS_{prefix}_") and name != f"RLRINGS_{prefix}_CONFIG":
                    # secretKeyRef values are only known in the cluster: a stand-in proves they are accepted;
                    # the pod's index is its ordinal (tests/deploy/test_chart_plan.py tries each)
                    ordinal = "pod-index" in var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
                    monkeypatch.setenv(name, var.get("value", "0" if ordinal else "from-a-secret"))
            for name, var in env.items():  # files from the TLS and token Secrets: stand-ins of the same shape
                if var.get("value", "").startswith(("/etc/rlrings-tls/", "/etc/rlrings-auth/")):
                    monkeypatch.setenv(name, str(secret_files[Path(var["value"]).name]))
            monkeypatch.setenv(f"RLRINGS_{prefix}_CONFIG", str(local))
            config = load_config(CONFIGS[prefix], [])
            assert prefix == "FEWSHOT" or config.host == "0.0.0.0"
            for name in list(env):
                monkeypatch.delenv(name, raising=False)
            checked.add(prefix)
            if prefix == "REPLAY":
                assert config.store == values.get("replay", {}).get("store", "embedded")
    expected = set(CONFIGS) - (set() if values.get("viewer", {}).get("enabled", True) else {"VIEWER"})
    if not values.get("experiments", {}).get("fewshot", {}).get("enabled", False):
        expected.discard("FEWSHOT")
    if not values.get("inference", {}).get("enabled", False):
        expected.discard("INFERENCE")
    assert checked == expected


def test_the_fewshot_job_shards_the_experiment_over_indexed_pods_sharing_a_volume(scenario, tmp_path):
    values, objects = scenario
    jobs = by_kind(objects, "Job")
    fewshot = values.get("experiments", {}).get("fewshot", {})
    if not fewshot.get("enabled", False):
        assert jobs == []
        return
    (job,) = jobs
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == fewshot["shards"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["experiment", "fewshot"]
    claim = next(v for v in pod["volumes"] if v["name"] == "data")["persistentVolumeClaim"]["claimName"]
    (pvc,) = [p for p in by_kind(objects, "PersistentVolumeClaim") if p["metadata"]["name"] == claim]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every shard writes its jobs and reads the others'
    config_map = next(c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == claim)
    local = tmp_path / "fewshot.yaml"
    local.write_text(config_map["data"]["config.yaml"])
    config = load_config(FewShotConfig, ["--config", str(local)])
    assert config.shards == fewshot["shards"] and str(config.out).startswith("/data/")
    assert config.meta_env_steps == fewshot["settings"]["meta_env_steps"]
    assert config.parameter_address.startswith("demo-rlrings-parameter.")
    policy = next(p for p in by_kind(objects, "NetworkPolicy") if p["metadata"]["name"].endswith("-parameter"))
    allowed = [peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for rule in policy["spec"]["ingress"]
               for peer in rule.get("from", []) if "podSelector" in peer]  # fmt: skip
    assert "fewshot" in allowed


def test_tls_and_tokens_come_from_secrets_and_probes_keep_a_plaintext_health_port(scenario):
    values, objects = scenario
    security = values.get("security", {})
    tls_on = security.get("tls", {}).get("enabled", False)
    auth_on = security.get("auth", {}).get("enabled", False)
    for component, spec in pod_specs(objects):
        secrets = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
        for container in spec["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            if component == "test":
                args = container["args"]
                assert ("--ca-file" in args) == tls_on and ("--cert-file" in args) == (
                    tls_on and security["tls"].get("mutual", False)
                )
                continue
            if "grpc" not in ports:
                continue
            prefix = next(name for name in env if name.endswith("_CONFIG")).removesuffix("CONFIG")
            probe = container["readinessProbe"]["grpc"]["port"]
            assert container["livenessProbe"]["grpc"]["port"] == probe
            if tls_on:
                assert probe == ports["health"] == int(env[f"{prefix}HEALTH_PORT"]) != ports["grpc"]
                assert env[f"{prefix}TLS__CERT_FILE"] == "/etc/rlrings-tls/tls.crt"
                assert secrets["tls"].startswith(security["tls"]["secretName"])  # (or the component's own: below)
            else:
                assert probe == ports["grpc"] and not any("TLS__" in name for name in env)
            assert (f"{prefix}AUTH__TOKENS_FILE" in env) == auth_on
            if auth_on:
                assert secrets["auth"] == security["auth"]["secretName"]


def test_components_get_their_own_identities_with_only_the_scopes_they_need(scenario):
    """With tls.perComponent each component that calls others mounts its own certificate and servers
    give each only its scopes; with auth.componentTokenKeys each presents its own token. The
    chart's least-privilege defaults are the ones rlrings tokens writes."""
    values, objects = scenario
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["security"]["componentScopes"]
    assert defaults == COMPONENT_SCOPES
    security = values.get("security", {})
    tls, auth = security.get("tls", {}), security.get("auth", {})
    per_component = tls.get("enabled") and tls.get("perComponent")
    for component, spec in pod_specs(objects):
        ours = [c for c in spec["containers"] if any(e["name"].endswith("_CONFIG") for e in c.get("env", []))]
        if component == "test" or not ours:  # (the helm test pod, Cassandra)
            continue
        (container,) = ours
        env = {e["name"]: e for e in container["env"]}
        prefix = next(name for name in env if name.endswith("_CONFIG")).removesuffix("CONFIG")
        secrets = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
        if tls.get("enabled"):
            own = per_component and component in COMPONENT_SCOPES
            assert secrets["tls"] == (f"{tls['secretName']}-{component}" if own else tls["secretName"])
        scopes = env.get(f"{prefix}AUTH__CERTIFICATE_SCOPES")
        serves = f"{prefix}PORT" in env
        if per_component and tls.get("mutual") and serves:
            assert json.loads(scopes["value"]) == COMPONENT_SCOPES
        else:
            assert scopes is None
        token = env.get(f"{prefix}AUTH__TOKEN")
        if auth.get("enabled"):
            key = auth.get("componentTokenKeys", {}).get(component, auth.get("internalTokenKey", "internal-token"))
            assert token["valueFrom"]["secretKeyRef"] == {"name": auth["secretName"], "key": key}
        else:
            assert token is None


def test_gpus_are_limited_on_the_learner_and_on_actors_and_inference_only_when_asked(scenario):
    values, objects = scenario
    actor_gpus = values.get("actor", {}).get("gpu", {}).get("enabled", False)
    inference_gpus = values.get("inference", {}).get("gpus", 1)
    gpu_rank = values.get("learner", {}).get("gpusPerRank", 1)
    for component, spec in pod_specs(objects):
        for container in spec["containers"]:
            limits = container.get("resources", {}).get("limits", {})
            gpus = {k: v for k, v in limits.items() if k.startswith("nvidia.com/")}
            if component == "learner":
                assert gpus == ({"nvidia.com/gpu": gpu_rank} if gpu_rank else {})
                tolerations = spec.get("tolerations", [])
                assert bool(gpu_rank) == any(t["key"] == "nvidia.com/gpu" for t in tolerations)
            elif component == "actor" and actor_gpus:
                assert len(gpus) == 1
            elif component == "inference":
                assert gpus == ({"nvidia.com/gpu": inference_gpus} if inference_gpus else {})
            else:
                assert gpus == {}, f"{component} asks for GPUs"


def test_images_are_pinned_and_pods_run_unprivileged(scenario):
    _, objects = scenario
    for component, spec in pod_specs(objects):
        for container in spec["containers"]:
            image = container["image"]
            assert re.search(r"(:[A-Za-z0-9_][A-Za-z0-9_.-]*|@sha256:[a-f0-9]{64})$", image.rsplit("/", 1)[-1]), image
            assert not image.endswith(":latest"), image
            context = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, f"{component} may run as root"
            assert context.get("allowPrivilegeEscalation") is False, component
            assert "resources" in container and container["resources"].get("requests"), component


def test_every_rlrings_server_has_native_grpc_probes_on_its_port(scenario):
    _, objects = scenario
    for component, spec in pod_specs(objects):
        for container in spec["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            if "grpc" not in ports:
                continue
            probed = ports.get("health", ports["grpc"])  # with TLS on, the plaintext health-only port
            assert container["livenessProbe"]["grpc"]["port"] == probed, component
            assert container["readinessProbe"]["grpc"]["port"] == probed, component


def test_only_the_viewer_is_exposed_and_only_replay_reaches_cassandra(scenario):
    values, objects = scenario
    for service in by_kind(objects, "Service"):
        component = service["metadata"]["labels"]["app.kubernetes.io/component"]
        if service["spec"].get("type", "ClusterIP") != "ClusterIP":
            assert component == "viewer"
    policies = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in by_kind(objects, "NetworkPolicy")}
    components = {c for c, _ in pod_specs(objects)} - {"test"}
    assert components <= set(policies), "a component has no NetworkPolicy"
    if "cassandra" in policies:
        sources = [
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for rule in policies["cassandra"]["spec"]["ingress"]
            if any(p["port"] == 9042 for p in rule["ports"])
            for peer in rule["from"]
        ]
        assert set(sources) == {"replay", "cassandra"}
    # Nothing but the viewer's web port is open to every source.
    for component, policy in policies.items():
        for rule in policy["spec"]["ingress"]:
            if "from" not in rule:
                assert component == "viewer" and [p["port"] for p in rule["ports"]] == [
                    values.get("viewer", {}).get("httpPort", 8080)
                ]


def test_cassandra_runs_as_a_spread_ring_or_comes_from_contact_points(scenario):
    values, objects = scenario
    cassandra = values.get("cassandra", {})
    rings = [
        o
        for o in by_kind(objects, "StatefulSet")
        if o["metadata"]["labels"]["app.kubernetes.io/component"] == "cassandra"
    ]
    config = next(
        yaml.safe_load(c["data"]["config.yaml"])
        for c in by_kind(objects, "ConfigMap")
        if c["metadata"]["labels"]["app.kubernetes.io/component"] == "replay"
    )
    if cassandra.get("enabled"):
        (ring,) = rings
        assert ring["spec"]["replicas"] == cassandra.get("replicas", 3)
        anti = ring["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
        assert ring["spec"]["volumeClaimTemplates"]
        assert len(config["cassandra"]["contact_points"]) == ring["spec"]["replicas"]
    else:
        assert rings == []
    if values.get("replay", {}).get("store") == "cassandra" and not cassandra.get("enabled"):
        assert config["cassandra"]["contact_points"] == cassandra["external"]["contactPoints"]


def test_credentials_come_from_secrets_never_from_values(scenario):
    values, objects = scenario
    for _, spec in pod_specs(objects):
        for container in spec["containers"]:
            for var in container.get("env", []):
                if re.search(r"PASSWORD|TOKEN$|SECRET", var["name"]):  # (a *_FILE is a path to a mounted Secret)
                    assert "value" not in var and "secretKeyRef" in var["valueFrom"], var["name"]
    secret = values.get("cassandra", {}).get("external", {}).get("existingSecret")
    auth = values.get("security", {}).get("auth", {})
    if secret and values.get("replay", {}).get("store") == "cassandra":
        refs = {
            var["valueFrom"]["secretKeyRef"]["name"]
            for _, spec in pod_specs(objects)
            for c in spec["containers"]
            for var in c.get("env", [])
            if "secretKeyRef" in var.get("valueFrom", {})
        }
        assert refs - ({auth["secretName"]} if auth.get("enabled") else set()) == {secret}


def test_learner_ranks_find_each_other_through_the_headless_service(scenario):
    values, objects = scenario
    ring = values.get("learner", {}).get("ring", {})
    (learner,) = [
        o
        for o in by_kind(objects, "StatefulSet")
        if o["metadata"]["labels"]["app.kubernetes.io/component"] == "learner"
    ]
    ranks = ring.get("ranks", 1)
    assert learner["spec"]["replicas"] == ranks
    assert learner["spec"]["podManagementPolicy"] == "Parallel"
    headless = next(s for s in by_kind(objects, "Service") if s["metadata"]["name"] == learner["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    env = {e["name"]: e for e in learner["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WORLD_SIZE"]["value"] == str(ranks)
    assert env["MASTER_ADDR"]["value"].startswith(f"{learner['metadata']['name']}-0.{headless['metadata']['name']}.")
    assert env["MASTER_PORT"]["value"] == str(ring.get("port", 29500))
    assert env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    volumes = learner["spec"]["template"]["spec"]["volumes"]
    config_map = next(v for v in volumes if v["name"] == "config")["configMap"]["name"]
    (data,) = [c["data"] for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"] == config_map]
    config = yaml.safe_load(data["config.yaml"])
    assert config["ring"] == (ring.get("backend", "horovod") if ranks > 1 else "none")
    # Every rank reads and rank 0 writes the same checkpoints: one ReadWriteMany claim.
    claim = next(v for v in learner["spec"]["template"]["spec"]["volumes"] if v["name"] == "checkpoints")
    pvc = next(
        p
        for p in by_kind(objects, "PersistentVolumeClaim")
        if p["metadata"]["name"] == claim["persistentVolumeClaim"]["claimName"]
    )
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_helm_test_hook_checks_every_grpc_service(scenario):
    _, objects = scenario
    (pod,) = by_kind(objects, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    args = pod["spec"]["containers"][0]["args"]
    assert args[0] == "health"
    grpc_services = {
        f"{s['metadata']['name']}.rl.svc:{p['port']}"
        for s in by_kind(objects, "Service")
        for p in s["spec"]["ports"]
        if p["name"] == "grpc" and s["spec"].get("clusterIP") != "None"
    }
    addresses = list(itertools.takewhile(lambda arg: not arg.startswith("--"), args[3:]))
    assert set(addresses) == grpc_services


def test_monitoring_follows_its_flags(scenario):
    values, objects = scenario
    monitors = by_kind(objects, "ServiceMonitor")
    wanted = values.get("metrics", {}).get("serviceMonitor", {}).get("enabled", False)
    assert bool(monitors) == wanted
    services = {(s["metadata"]["name"], p["name"]) for s in by_kind(objects, "Service") for p in s["spec"]["ports"]}
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert (monitor["metadata"]["name"], monitor["spec"]["endpoints"][0]["port"]) in services
    dashboards = [c for c in by_kind(objects, "ConfigMap") if "rlrings.json" in c.get("data", {})]
    assert bool(dashboards) == values.get("metrics", {}).get("grafanaDashboard", {}).get("enabled", True)
    for dashboard in dashboards:
        assert json.loads(dashboard["data"]["rlrings.json"])["panels"]


def test_dashboard_queries_only_metrics_the_services_export():
    exported = set()
    for path in [*ROOT.glob("services/*/metrics.py"), ROOT / "rlrings" / "rpc" / "server.py"]:
        exported |= set(re.findall(r'"(rlrings_[a-z_]+)"', path.read_text()))
    dashboard = json.loads((CHART / "dashboards" / "rlrings.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\b(rlrings_[a-z_]+)", target["expr"]):
                base = re.sub(r"_(total|sum|count|bucket)$", "", name)
                assert base in exported, f"panel {panel['title']!r} queries {name}, which nothing exports"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"image": {"tag": "latest"}}, "/image/tag"),
        ({"replay": {"shardz": 2}}, "shardz"),
        ({"replay": {"store": "cassandra"}}, "contactPoints"),
        ({"learner": {"ring": {"backend": "mpi"}}}, "/learner/ring/backend"),
        ({"cassandra": {"external": {"password": "hunter2"}}}, "password"),
    ],
)
def test_bad_values_are_refused_by_the_schema_naming_the_value(values, complaint):
    with pytest.raises(helm_python.HelmValuesError, match=re.escape(complaint)):
        render(values)

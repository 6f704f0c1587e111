"""The chart meets a real Kubernetes API server: kube-apiserver and etcd built from the
Go module proxy by `make tools` (dev/apiserver), started on loopback, with the
Prometheus Operator's own ServiceMonitor CRD installed. Each CI scenario is
`helm install`ed into a namespace that enforces the `restricted` Pod Security level,
then `helm upgrade`d to a new chart version; every object must be accepted by the
server's admission and validation, every workload's pod template must pass the
restricted level (no controller runs here to make the pods, so each template is sent
as a Pod with `dryRun=All`), and the upgrade must change no immutable field.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rlrings.ops.processes import free_port
from tests.deploy.helpers import ROOT, TOOLS_BIN

CHART = ROOT / "helm" / "rlrings"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_APISERVER, ETCD, HELM = TOOLS_BIN / "kube-apiserver", TOOLS_BIN / "etcd", TOOLS_BIN / "helm"
# The Prometheus Operator's CRD, taken from its Go module by `make tools`
SERVICE_MONITOR_CRD = TOOLS_BIN.parent / "crds" / "monitoring.coreos.com_servicemonitors.yaml"
WORKLOADS = ("Deployment", "StatefulSet", "Job", "DaemonSet")
RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}

pytestmark = pytest.mark.skipif(
    not all(p.exists() for p in (KUBE_APISERVER, ETCD, HELM, SERVICE_MONITOR_CRD)),
    reason="kube-apiserver, etcd, helm or the ServiceMonitor CRD is missing (make tools builds them)",
)


class ApiServer:
    """A client of the API server: plain HTTPS with a bearer token, as kubectl would do."""

    def __init__(self, url: str, token: str, ca: Path, kubeconfig: Path):
        self.url, self.token, self.kubeconfig = url, token, kubeconfig
        self.context = ssl.create_default_context(cafile=str(ca))
        self._resources: dict[tuple[str, str], tuple[str, bool]] = {}

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict, list[str]]:
        """(status, decoded body, warnings the server sent back)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
                status, payload, warnings = response.status, response.read(), response.headers.get_all("Warning")
        except urllib.error.HTTPError as error:
            status, payload, warnings = error.code, error.read(), error.headers.get_all("Warning")
        try:
            decoded = json.loads(payload or b"{}")
        except ValueError:  # /readyz and friends answer in plain text
            decoded = {"text": payload.decode(errors="replace")}
        return status, decoded, warnings or []

    def path(self, api_version: str, kind: str, namespace: str, name: str = "") -> str:
        """The REST path of a kind, found through the server's discovery (as kubectl finds it)."""
        if (api_version, kind) not in self._resources:
            prefix = "/api/" if "/" not in api_version else "/apis/"
            status, listing, _ = self.request("GET", prefix + api_version)
            assert status == 200, f"the server does not serve {api_version}: {listing}"
            for resource in listing["resources"]:
                if "/" not in resource["name"]:
                    self._resources[(api_version, resource["kind"])] = (resource["name"], resource["namespaced"])
        plural, namespaced = self._resources[(api_version, kind)]
        prefix = "/api/" if "/" not in api_version else "/apis/"
        where = f"/namespaces/{namespace}" if namespaced else ""
        return f"{prefix}{api_version}{where}/{plural}" + (f"/{name}" if name else "")

    def get(self, obj: dict, namespace: str) -> tuple[int, dict]:
        status, body, _ = self.request(
            "GET", self.path(obj["apiVersion"], obj["kind"], namespace, obj["metadata"]["name"])
        )
        return status, body

    def helm(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(HELM), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={
                **os.environ,
                "HELM_CACHE_HOME": str(self.kubeconfig.parent / "helm-cache"),
                "HELM_CONFIG_HOME": str(self.kubeconfig.parent / "helm-config"),
                "HELM_DATA_HOME": str(self.kubeconfig.parent / "helm-data"),
            },  # fmt: skip
        )


def _wait_ready(server: ApiServer, processes: list[subprocess.Popen], logs: list[Path], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        for process, log in zip(processes, logs):
            if process.poll() is not None:
                raise RuntimeError(f"{log.stem} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            status, body, _ = server.request("GET", "/readyz")
            if status == 200:
                return
            last = str(body)
        except OSError as error:  # not listening yet
            last = repr(error)
        time.sleep(0.5)
    raise RuntimeError(f"kube-apiserver was not ready after {seconds:.0f} s ({last}):\n{logs[-1].read_text()[-4000:]}")


@pytest.fixture(scope="module")
def api_server(tmp_path_factory) -> ApiServer:
    work = tmp_path_factory.mktemp("apiserver")
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    token = secrets.token_hex(16)
    (work / "tokens.csv").write_text(f"{token},admin,admin-uid,system:masters\n")
    key = ec.generate_private_key(ec.SECP256R1())
    (work / "sa.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (work / "sa.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    commands = {
        "etcd": [
            str(ETCD), "--data-dir", str(work / "etcd"), "--name", "rlrings",
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"rlrings=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",  # a throwaway store on a shared disk
        ],
        "kube-apiserver": [
            str(KUBE_APISERVER), "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(api_port),
            "--cert-dir", str(work / "certs"), "--token-auth-file", str(work / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(work / "sa.pub"),
            "--service-account-signing-key-file", str(work / "sa.key"),
            "--service-cluster-ip-range", "10.96.0.0/16",
            "--endpoint-reconciler-type", "none",  # no nodes to reach the API through a Service here
        ],
    }  # fmt: skip
    processes, logs = [], []
    try:
        for name, command in commands.items():
            log = work / f"{name}.log"
            with open(log, "w") as out:  # the child keeps its own descriptor
                processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT))
            logs.append(log)
        ca = work / "certs" / "apiserver.crt"
        deadline = time.monotonic() + 60
        while not ca.exists() and time.monotonic() < deadline and processes[-1].poll() is None:
            time.sleep(0.2)
        if not ca.exists():
            raise RuntimeError(f"kube-apiserver wrote no serving certificate:\n{logs[-1].read_text()[-4000:]}")
        url = f"https://127.0.0.1:{api_port}"
        kubeconfig = work / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "local", "cluster": {"server": url, "certificate-authority": str(ca)}}],
                    "users": [{"name": "admin", "user": {"token": token}}],
                    "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
                    "current-context": "local",
                }
            )
        )
        kubeconfig.chmod(0o600)
        server = ApiServer(url, token, ca, kubeconfig)
        _wait_ready(server, processes, logs, 180)
        crd = yaml.safe_load(SERVICE_MONITOR_CRD.read_text())
        status, body, _ = server.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        assert status == 201, body
        _wait_established(server, crd["metadata"]["name"])
        yield server
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_established(server: ApiServer, crd: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, body, _ = server.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}")
        if any(c["type"] == "Established" and c["status"] == "True" for c in body["status"].get("conditions") or []):
            return
        time.sleep(0.2)
    raise AssertionError(f"{crd} was not established: {body['status']}")


def make_namespace(server: ApiServer, name: str) -> None:
    """A namespace that enforces (and warns and audits) the restricted Pod Security level."""
    status, body, _ = server.request(
        "POST", "/api/v1/namespaces", {"metadata": {"name": name, "labels": RESTRICTED}, "kind": "Namespace"}
    )
    assert status == 201, body
    # what the controller manager would add: the namespace's default ServiceAccount
    status, body, _ = server.request(
        "POST", f"/api/v1/namespaces/{name}/serviceaccounts", {"metadata": {"name": "default"}}
    )
    assert status == 201, body


def manifest(server: ApiServer, release: str, namespace: str) -> list[dict]:
    result = server.helm("get", "manifest", release, "-n", namespace)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def complaints(helm_stderr: str) -> list[str]:
    """What the server warned about while helm applied the chart (PodSecurity, unknown or deprecated fields)."""
    return [line for line in helm_stderr.splitlines() if "warning" in line.lower()]


def assert_pod_templates_pass_restricted(server: ApiServer, objects: list[dict], namespace: str) -> int:
    """Sends each workload's pod template as a Pod, dry run: the restricted level admits it."""
    checked = 0
    for obj in objects:
        if obj["kind"] == "Pod":  # a hook's
            obj = {**obj, "spec": {"template": {"metadata": obj["metadata"], "spec": obj["spec"]}}}
        elif obj["kind"] not in WORKLOADS:
            continue
        template = obj["spec"]["template"]
        spec = dict(template["spec"])
        name = obj["metadata"]["name"]
        # what the StatefulSet controller adds: a volume per claim template, bound to pod 0's claim
        claims = [t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])]
        claimed = [{"name": c, "persistentVolumeClaim": {"claimName": f"{c}-{name}-0"}} for c in claims]
        spec["volumes"] = [*spec.get("volumes", []), *claimed]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{name}-template", "labels": template["metadata"].get("labels")},
            "spec": spec,
        }
        status, body, warnings = server.request("POST", f"/api/v1/namespaces/{namespace}/pods?dryRun=All", pod)
        assert status == 201, f"{obj['kind']} {obj['metadata']['name']}: {body.get('message', body)}"
        assert warnings == [], f"{obj['kind']} {obj['metadata']['name']}: {warnings}"
        checked += 1
    return checked


def test_the_namespace_really_enforces_the_restricted_level(api_server):
    make_namespace(api_server, "enforcement")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain"},  # fine at the baseline level, not at the restricted one
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    }
    status, body, _ = api_server.request("POST", "/api/v1/namespaces/enforcement/pods?dryRun=All", pod)
    assert status == 403, body["message"]
    assert 'violates PodSecurity "restricted:latest"' in body["message"]
    assert "allowPrivilegeEscalation != false" in body["message"] and "runAsNonRoot != true" in body["message"]


@pytest.mark.parametrize("values", [None, *SCENARIOS], ids=["defaults", *(p.stem for p in SCENARIOS)])
def test_helm_install_and_upgrade_into_a_restricted_namespace(api_server, values, tmp_path):
    namespace = "rl-" + (values.stem.removesuffix("-values") if values else "defaults")
    make_namespace(api_server, namespace)
    flags = ["-n", namespace, "--timeout", "2m"] + (["-f", str(values)] if values else [])

    installed = api_server.helm("install", "demo", str(CHART), *flags)
    assert installed.returncode == 0, installed.stderr
    assert complaints(installed.stderr) == []
    objects = manifest(api_server, "demo", namespace)
    assert objects
    for obj in objects:
        status, body = api_server.get(obj, namespace)
        assert status == 200, f"{obj['kind']} {obj['metadata']['name']} is not in the cluster: {body}"
    hooks = api_server.helm("get", "hooks", "demo", "-n", namespace)  # the `helm test` pod
    objects_and_hooks = objects + [doc for doc in yaml.safe_load_all(hooks.stdout) if doc]
    assert assert_pod_templates_pass_restricted(api_server, objects_and_hooks, namespace) >= 5

    # The next release of the chart: a new version and image tag change every object's labels
    chart = tmp_path / "rlrings"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"], meta["appVersion"] = "0.1.1", "0.1.1"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    upgraded = api_server.helm("upgrade", "demo", str(chart), *flags, "--set", "image.tag=0.1.1")
    assert upgraded.returncode == 0, upgraded.stderr
    assert complaints(upgraded.stderr) == []
    status = api_server.helm("status", "demo", "-n", namespace, "-o", "json")
    release = json.loads(status.stdout)
    assert (release["version"], release["info"]["status"]) == (2, "deployed")
    after = manifest(api_server, "demo", namespace)
    kept = {(o["kind"], o["metadata"]["name"]) for o in after}
    for obj in objects:  # what the new release no longer has (a Job of another pod template) is gone
        if (obj["kind"], obj["metadata"]["name"]) not in kept:
            assert api_server.get(obj, namespace)[0] == 404, f"{obj['kind']} {obj['metadata']['name']} was left"
    for obj in after:
        code, body = api_server.get(obj, namespace)
        assert code == 200, f"{obj['kind']} {obj['metadata']['name']} is not in the cluster after the upgrade"
        assert body["metadata"]["labels"]["app.kubernetes.io/version"] == "0.1.1", obj["metadata"]["name"]
        if obj["kind"] in WORKLOADS:
            images = {c["image"] for c in body["spec"]["template"]["spec"]["containers"]}
            assert all(image.endswith(":0.1.1") or "@sha256:" in image for image in images if "rlrings" in image)

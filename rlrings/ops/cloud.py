"""``rlrings cloud``: the whole stack on Azure Kubernetes Service from two IDs.

    rlrings cloud up --subscription-id ID --tenant-id ID [--dry-run]
    rlrings cloud status --subscription-id ID --tenant-id ID
    rlrings cloud down --subscription-id ID --tenant-id ID [--dry-run]

``up`` runs Terraform (terraform/), builds the images in the cluster's registry
(``az acr build``), fetches credentials and installs or upgrades the Helm chart
(helm/rlrings) through pyhelm3. Every step is printed with the command it runs;
``--dry-run`` prints them all, checks the chart renders with the given values where
``helm`` is installed, and changes nothing. A failed step says what was already
applied and how to go on or tear down.

It runs from a checkout or from an installed wheel alike: the wheel carries the Terraform
module, the chart and the files the images' build context needs besides the code
(``rlrings/deploy/``), and ``rlrings cloud context --out DIR`` lays that context out as
a checkout's (which ``up`` does before it builds, outside a checkout).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import shlex
import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar

import pydantic
import yaml
from pydantic_settings import CliSubCommand, CliSuppress, get_subcommand
from rich.console import Console

import rlrings
from rlrings.ops.flags import Flags, subcommand

CHECKOUT = Path(__file__).resolve().parents[2]
PACKAGE = Path(rlrings.__file__).resolve().parent
IMAGES = ("replay", "parameter", "learner", "actor", "viewer", "inference")
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
INSTALL_HINTS = {
    "terraform": "https://developer.hashicorp.com/terraform/install (1.5 or later)",
    "az": "https://learn.microsoft.com/cli/azure/install-azure-cli, then `az login`",
    "helm": "https://helm.sh/docs/intro/install/ (3.14 or later)",
    "kubectl": "`az aks install-cli` (installs kubectl and kubelogin)",
    "kubelogin": "`az aks install-cli` (installs kubectl and kubelogin)",
}


class CloudError(Exception):
    """A step failed or cannot start; the message says what to do."""


class MissingTools(CloudError):
    """Command-line tools the steps run are not installed."""


@dataclass
class Step:
    """One thing ``rlrings cloud`` does: a command line, or Python (pyhelm3) with a
    command line that shows what it amounts to."""

    title: str
    command: list[str]
    run: Callable[[], object] | None = None
    changes: bool = True  # False for steps that only read
    cwd: Path | None = None
    done: bool = field(default=False, init=False)


@dataclass
class Plan:
    action: str
    steps: list[Step]


@dataclass(frozen=True)
class Sources:
    """What the steps deploy from: a checkout's folders, or the copies an installed wheel carries."""

    terraform: Path
    chart: Path
    context: Path
    """The images' build context (the Dockerfiles' paths are relative to it)."""
    checkout: bool


def sources(state: Path) -> Sources:
    """The checkout rlrings runs from, if it does; else the installed package's ``deploy/``, with
    the images' build context laid out under ``state`` (by :func:`lay_out_context`)."""
    if (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "helm" / "rlrings" / "Chart.yaml").is_file():
        return Sources(CHECKOUT / "terraform", CHECKOUT / "helm" / "rlrings", CHECKOUT, True)
    deploy = PACKAGE / "deploy"
    return Sources(deploy / "terraform", deploy / "chart", state / "image-context", False)


def lay_out_context(out: Path) -> Path:
    """The images' build context as a checkout holds it (``rlrings/``, ``services/``, ``terraform/``,
    ``helm/rlrings/``, ``pyproject.toml``, ``README.md``, ``docker/``), from the installed package;
    ``out`` is replaced. Building it gives the same wheel as the checkout the package came from."""
    deploy = PACKAGE / "deploy"
    if not (deploy / "project" / "pyproject.toml").is_file():
        raise CloudError(f"{PACKAGE} carries no deploy files (rlrings/deploy/); install rlrings from its wheel")
    if out.exists():
        shutil.rmtree(out)
    cached = shutil.ignore_patterns("__pycache__", "*.pyc")

    def code_only(folder: str, names: list[str]) -> set[str]:
        elsewhere = {"services", "deploy"} if Path(folder) == PACKAGE else set()
        return cached(folder, names) | (elsewhere & set(names))

    shutil.copytree(PACKAGE, out / "rlrings", ignore=code_only)
    shutil.copytree(PACKAGE / "services", out / "services", ignore=cached)
    shutil.copytree(deploy / "terraform", out / "terraform", ignore=cached)
    shutil.copytree(deploy / "chart", out / "helm" / "rlrings", ignore=cached)
    shutil.copytree(deploy / "project", out, ignore=cached, dirs_exist_ok=True)
    return out


class Cloud:
    """Plans and runs ``up``, ``status`` and ``down`` for one deployment."""

    def __init__(self, args: Deployment, argv: Sequence[str], console: Console):
        self.args = args
        self.argv = list(argv)  # to tell the user how to run the same command again
        self.console = console
        self.state = Path(args.state_dir).expanduser() / args.name
        self.kubeconfig = self.state / "kubeconfig"
        self.tfvars = self.state / "terraform.tfvars.json"
        self.outputs: dict[str, str] = {}
        self.sources = sources(self.state)

    # -- plans ---------------------------------------------------------------------

    def terraform(self, *args: str) -> list[str]:
        return ["terraform", f"-chdir={self.sources.terraform}", *args]

    def output(self, name: str) -> str:
        return self.outputs.get(name, f"<{name} from terraform output>")

    def plan(self) -> Plan:
        a = self.args
        account = Step(
            "Select the subscription", ["az", "account", "set", "--subscription", a.subscription_id], changes=False
        )
        init = Step("Initialise Terraform", self.terraform("init", "-input=false"))
        outputs = Step(
            "Read the cluster's names", self.terraform("output", "-json"), run=self._read_outputs, changes=False
        )
        credentials = [
            Step(
                "Fetch cluster credentials",
                [
                    "az",
                    "aks",
                    "get-credentials",
                    "--resource-group",
                    self.output("resource_group"),
                    "--name",
                    self.output("cluster_name"),
                    "--file",
                    str(self.kubeconfig),
                    "--overwrite-existing",
                ],
                changes=False,
            ),
            Step(
                "Log in to the cluster with the Azure CLI's identity",
                ["kubelogin", "convert-kubeconfig", "-l", "azurecli", "--kubeconfig", str(self.kubeconfig)],
                changes=False,
            ),
        ]
        helm = ["helm", "--kubeconfig", str(self.kubeconfig), "--namespace", a.namespace]
        if a.action == "up":
            apply = Step(
                "Create or update AKS, its node pools and the registry (Terraform)",
                self.terraform("apply", "-input=false", "-auto-approve", f"-var-file={self.tfvars}"),
            )
            builds = [
                Step(
                    f"Build the {image} image in the registry",
                    [
                        "az",
                        "acr",
                        "build",
                        "--registry",
                        self.output("registry_name"),
                        "--image",
                        f"rlrings/{image}:{rlrings.__version__}",
                        "--file",
                        f"services/{image}/Dockerfile",
                        str(self.sources.context),
                    ],
                    cwd=self.sources.context,
                )
                for image in IMAGES
            ]
            if not self.sources.checkout:
                context = self.sources.context
                builds.insert(
                    0,
                    Step(
                        "Lay out the images' build context from the installed package",
                        ["rlrings", "cloud", "context", "--out", str(context)],
                        run=lambda: lay_out_context(context),
                        changes=False,
                    ),
                )
            values = self.values_files()
            install = Step(
                "Install or upgrade the Helm release (pyhelm3)",
                [
                    *helm,
                    "upgrade",
                    "--install",
                    a.release,
                    str(self.sources.chart),
                    "--create-namespace",
                    "--atomic",
                    "--wait",
                    "--timeout",
                    "20m",
                    *[f"--values={v}" for v in values],
                ],
                run=self._helm_install,
            )
            test = Step("Check every service's health", [*helm, "test", a.release], changes=False)
            return Plan("up", [account, init, apply, outputs, *builds, *credentials, install, test])
        if a.action == "status":
            return Plan(
                "status",
                [
                    account,
                    init,
                    outputs,
                    *credentials,
                    Step("Show the release", [*helm, "status", a.release], changes=False),
                    Step(
                        "Show the pods",
                        [
                            "kubectl",
                            "--kubeconfig",
                            str(self.kubeconfig),
                            "--namespace",
                            a.namespace,
                            "get",
                            "pods",
                            "-o",
                            "wide",
                        ],
                        changes=False,
                    ),
                ],
            )
        uninstall = Step(
            "Uninstall the Helm release (pyhelm3)", [*helm, "uninstall", a.release, "--wait"], run=self._helm_uninstall
        )
        destroy = Step(
            "Destroy AKS, its pools and the registry (Terraform)",
            self.terraform("destroy", "-input=false", "-auto-approve", f"-var-file={self.tfvars}"),
        )
        return Plan("down", [account, init, outputs, *credentials, uninstall, destroy])

    def values_files(self) -> list[Path]:
        return [*(Path(v) for v in self.args.values), self.state / "values.generated.yaml"]

    def generated_values(self) -> dict:
        """What the CLI sets in the chart: the registry Terraform made and the image tag."""
        return {"image": {"registry": self.output("registry_login_server"), "tag": rlrings.__version__}}

    def terraform_variables(self, api_access: list[str]) -> dict:
        a = self.args
        return {
            "subscription_id": a.subscription_id,
            "tenant_id": a.tenant_id,
            "name": a.name,
            "location": a.location,
            "api_server_authorized_ip_ranges": api_access,
        }

    # -- running ---------------------------------------------------------------------

    def run(self) -> int:
        plan = self.plan()
        if self.args.dry_run:
            return self.print_plan(plan)
        self.check_tools()
        self.state.mkdir(parents=True, exist_ok=True)
        if plan.action in ("up", "down"):
            access = self.args.api_access or [self.public_address()]
            self.tfvars.write_text(json.dumps(self.terraform_variables(access), indent=2))
        for number, step in enumerate(plan.steps, 1):
            step.command = self._resolve(step.command)
            self.announce(plan, number, step)
            try:
                if step.run is not None:
                    step.run()
                else:
                    subprocess.run(step.command, check=True, cwd=step.cwd)
            except (subprocess.CalledProcessError, CloudError, OSError) as error:
                self.report_failure(plan, step, error)
                return 1
            step.done = True
        self.console.print(f"[green]rlrings cloud {plan.action}: done[/]")
        return 0

    def print_plan(self, plan: Plan) -> int:
        a = self.args
        self.console.print(f"[bold]rlrings cloud {plan.action} --dry-run[/]: nothing is changed.")
        self.console.print(
            f"  subscription {a.subscription_id}, tenant {a.tenant_id}, "
            f"deployment {a.name!r} in {a.location}, release {a.release!r} in namespace {a.namespace!r}"
        )
        missing = self.missing_tools()
        for tool in missing:
            self.console.print(f"  [yellow]needs {tool}[/]: {INSTALL_HINTS[tool]}")
        if plan.action in ("up", "down"):
            access = a.api_access or ["<this machine's public address>/32"]
            self.console.print(f"  Terraform variables ({self.tfvars}):")
            for line in json.dumps(self.terraform_variables(access), indent=2).splitlines():
                self.console.print(f"    {line}", markup=False, highlight=False)
        for number, step in enumerate(plan.steps, 1):
            self.announce(plan, number, step)
        if plan.action == "up":
            self.check_chart()
        return 0

    def announce(self, plan: Plan, number: int, step: Step) -> None:
        self.console.print(f"[bold][{number}/{len(plan.steps)}][/] {step.title}")
        self.console.print(f"  $ {shlex.join(step.command)}", markup=False)

    def check_chart(self) -> None:
        """``helm template`` through pyhelm3 with the user's values: bad values show now, not
        after Terraform has spent twenty minutes."""
        if shutil.which("helm") is None:
            self.console.print("  chart check skipped: helm is not installed")
            return
        from pyhelm3 import Client

        async def render() -> list:
            client = Client()
            chart = await client.get_chart(self.sources.chart)
            return list(
                await client.template_resources(chart, self.args.release, *self.values(), namespace=self.args.namespace)
            )

        try:
            objects = asyncio.run(render())
        except Exception as error:  # pyhelm3 raises its own errors with helm's stderr
            raise CloudError(f"the chart does not render with these values: {error}") from None
        kinds = sorted({o["kind"] for o in objects})
        self.console.print(f"  chart check: helm renders {len(objects)} objects ({', '.join(kinds)})")

    def values(self) -> list[dict]:
        loaded = []
        for path in self.args.values:
            try:
                loaded.append(yaml.safe_load(Path(path).read_text()) or {})
            except (OSError, yaml.YAMLError) as error:
                raise CloudError(f"--values {path}: {error}") from None
        return [*loaded, self.generated_values()]

    def missing_tools(self) -> list[str]:
        return [tool for tool in INSTALL_HINTS if shutil.which(tool) is None]

    def check_tools(self) -> None:
        missing = self.missing_tools()
        if missing:
            hints = "\n".join(f"  {tool}: {INSTALL_HINTS[tool]}" for tool in missing)
            raise MissingTools(
                f"missing {', '.join(missing)}; install them and run again. Nothing was changed.\n{hints}"
            )

    def public_address(self) -> str:
        try:
            with urllib.request.urlopen("https://api.ipify.org", timeout=10) as reply:
                address = ipaddress.ip_address(reply.read().decode().strip())
        except (OSError, ValueError) as error:
            raise CloudError(
                f"cannot find this machine's public address ({error}); pass --api-access CIDR "
                "for the addresses allowed to reach the Kubernetes API. Nothing was changed."
            ) from None
        return f"{address}/{32 if address.version == 4 else 128}"

    def report_failure(self, plan: Plan, step: Step, error: Exception) -> None:
        done = [s.title for s in plan.steps if s.done and s.changes]
        self.console.print(f"[red]rlrings cloud {plan.action}: step {step.title!r} failed: {error}[/]")
        if step.changes:
            self.console.print("[yellow]The failed step may have applied part of its changes.[/]")
        if done or step.changes:
            self.console.print("[yellow]Already applied:[/] " + ("; ".join(done) or "nothing before this step"))
            again = f"`rlrings cloud {shlex.join(self.argv)}`"
            self.console.print(
                f"Run {again} again to go on (every step is idempotent), "
                "or `rlrings cloud down` with the same IDs to remove what was made."
            )
        else:
            self.console.print("Nothing was changed.")

    def _resolve(self, command: list[str]) -> list[str]:
        """Fills in names that come from Terraform's outputs once they are known."""
        return [re.sub(r"<(\w+) from terraform output>", lambda m: self.output(m.group(1)), c) for c in command]

    def _read_outputs(self) -> None:
        result = subprocess.run(self.terraform("output", "-json"), check=True, capture_output=True, text=True)
        self.outputs = {name: o["value"] for name, o in json.loads(result.stdout).items() if not o.get("sensitive")}
        (self.state / "values.generated.yaml").write_text(yaml.safe_dump(self.generated_values()))

    def _client(self):
        from pyhelm3 import Client

        return Client(kubeconfig=self.kubeconfig)

    def _helm_install(self) -> None:
        async def install():
            client = self._client()
            chart = await client.get_chart(self.sources.chart)
            return await client.install_or_upgrade_release(
                self.args.release,
                chart,
                *self.values(),
                namespace=self.args.namespace,
                create_namespace=True,
                atomic=True,
                wait=True,
                timeout="20m",
            )

        revision = asyncio.run(install())
        self.console.print(f"  release {self.args.release} at revision {revision.revision}: {revision.status}")
        if revision.notes:
            self.console.print(revision.notes, markup=False, highlight=False)

    def _helm_uninstall(self) -> None:
        async def uninstall():
            await self._client().uninstall_release(self.args.release, namespace=self.args.namespace, wait=True)

        asyncio.run(uninstall())


def guid(text: str) -> str:
    if not GUID.match(text):
        raise ValueError(f"{text!r} is not a GUID (like 00000000-0000-0000-0000-000000000000)")
    return text.lower()


def cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ValueError(f"{text!r} is not an address range such as 203.0.113.7/32") from None


def existing_file(path: str) -> str:
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such file")
    return path


Guid = Annotated[str, pydantic.AfterValidator(guid)]
Cidr = Annotated[str, pydantic.AfterValidator(cidr)]


class Deployment(Flags):
    subscription_id: Guid
    """Azure subscription ID."""
    tenant_id: Guid
    """Microsoft Entra tenant ID."""
    name: str = "rlrings"
    """Base name of the Azure resources."""
    location: str = "westeurope"
    """Azure region."""
    release: str = "rlrings"
    """Helm release name."""
    namespace: str = "rlrings"
    """Kubernetes namespace."""
    state_dir: str = "~/.rlrings/cloud"
    """Where kubeconfig and variables are kept."""
    dry_run: bool = False
    """Print every step and command; change nothing."""
    api_access: CliSuppress[list[str]] = []
    values: CliSuppress[list[str]] = []

    action: ClassVar[str]


class Up(Deployment):
    """Create or update the cluster, build the images, install the chart."""

    action: ClassVar[str] = "up"
    api_access: list[Cidr] = []
    """Address range allowed to reach the Kubernetes API (repeatable; default: this machine)."""
    values: list[Annotated[str, pydantic.AfterValidator(existing_file)]] = []
    """Helm values file (repeatable), for example helm/rlrings/ci/gpu-ring-values.yaml."""


class Status(Deployment):
    """Show the release and its pods."""

    action: ClassVar[str] = "status"


class Down(Deployment):
    """Uninstall the chart and destroy the cluster."""

    action: ClassVar[str] = "down"
    api_access: list[Cidr] = []
    """Address range allowed to reach the Kubernetes API (repeatable; default: this machine)."""


class Context(Flags):
    """Lay out the images' build context from the installed package (for docker build).

    The context is laid out as a checkout holds it; docker build -f services/NAME/Dockerfile DIR
    then builds each image."""

    out: str
    """Folder to write (replaced if it exists)."""

    def run(self) -> int:
        console = Console(highlight=False, soft_wrap=True)
        try:
            out = lay_out_context(Path(self.out))
        except (CloudError, OSError) as error:
            console.print(f"[red]rlrings cloud context: {error}[/]")
            return 1
        console.print(f"the images' build context is in {out}: docker build -f services/NAME/Dockerfile {out}")
        return 0


class CloudCommand(Flags):
    """rlrings on Azure Kubernetes Service."""

    up: CliSubCommand[Up] = subcommand(Up)
    status: CliSubCommand[Status] = subcommand(Status)
    down: CliSubCommand[Down] = subcommand(Down)
    context: CliSubCommand[Context] = subcommand(Context)

    def run(self, argv: Sequence[str]) -> int:
        """Runs the chosen action; ``argv`` (from ``up`` on) is how the user asked for it."""
        chosen = get_subcommand(self)
        if isinstance(chosen, Context):
            return chosen.run()
        console = Console(highlight=False, soft_wrap=True)
        try:
            return Cloud(chosen, argv, console).run()
        except CloudError as error:
            console.print(f"[red]rlrings cloud {chosen.action}: {error}[/]")
            return 3 if isinstance(error, MissingTools) else 1

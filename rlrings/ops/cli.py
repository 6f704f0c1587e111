"""The ``rlrings`` command line.

    rlrings up [--env CartPole-v1 --actors 2 ...]   the whole mesh on this machine
    rlrings experiment fewshot [--family cartpole --methods ... --shots 1,5,10 --seeds 5]
    rlrings replay|parameter|learner|actor|viewer|inference   one service (its settings as flags)
    rlrings models list [--run RUN_DIR | --address ...]      versions, tags, evaluations
    rlrings models pull [--run RUN_DIR | --address ...] [--tag solved|best|latest --out model.pt]
    rlrings models untag TAG [--address ...]
    rlrings algorithms [NAME]                       the algorithms; one's settings and defaults
    rlrings render --model latest --env CartPole-v1 --episodes 2 --out agent.mp4
    rlrings info [--address ...]                    a replay server's tables
    rlrings health ADDRESS...                       grpc.health.v1 of running services
    rlrings certs --out certs --hosts a,b           a development CA and certificate for TLS
    rlrings tokens --out tokens [--client n=insert]  one least-privilege token per component
    rlrings tokens add NAME=SCOPE,... [--out tokens] a token for another client, in an existing file
    rlrings tables --env crafter --algorithm dqn    replay tables for a config file or Helm values
    rlrings cloud up|status|down ...                the stack on AKS (see: rlrings cloud --help)

Every command takes ``--help``; service and ``up`` settings also come from
``--config FILE`` and ``RLRINGS_<SERVICE>_<SETTING>`` environment variables.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table as RichTable

SERVICES = {
    "replay": "rlrings.services.replay.server",
    "parameter": "rlrings.services.parameter.server",
    "learner": "rlrings.services.learner.server",
    "actor": "rlrings.services.actor.server",
    "viewer": "rlrings.services.viewer.server",
    "inference": "rlrings.services.inference.server",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("--help", [])
    if command in ("--version", "-V"):
        from rlrings import __version__

        print(f"rlrings {__version__}")
        return 0
    if command in SERVICES:  # each service parses its own settings
        return importlib.import_module(SERVICES[command]).main(rest)
    if command == "up":
        return _up(rest)
    if command == "experiment":
        return _experiment(rest)
    if command == "cloud":
        from rlrings.ops.cloud import main as cloud_main

        return cloud_main(rest)
    parser = argparse.ArgumentParser(prog="rlrings", description="Distributed RL as a gRPC microservice mesh.")
    parser.add_argument("--version", "-V", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="run the whole mesh on this machine (see: rlrings up --help)")
    commands.add_parser("experiment", help="experiments: fewshot (see: rlrings experiment fewshot --help)")
    for name in SERVICES:
        commands.add_parser(name, help=f"run one {name} service (see: rlrings {name} --help)")
    models = commands.add_parser("models", help="trained models").add_subparsers(dest="action", required=True)
    pull = models.add_parser(
        "pull", help="write a model to a file: weights and what rebuilds it (from a running service or a run directory)"
    )
    pull.add_argument("--tag", default="latest", help=f"{TAG_HELP} (default latest)")
    pull.add_argument("--version", type=int, default=0, help="a version number instead of a tag")
    pull.add_argument("--out", default="model.pt", help="file to write (default model.pt)")
    listing = models.add_parser("list", help="versions with their tags and evaluations")
    for command in (pull, listing):
        where = command.add_mutually_exclusive_group()
        where.add_argument("--run", metavar="RUN_DIR", help="a run directory of rlrings up (read with no server)")
        where.add_argument("--address", default="127.0.0.1:8001", help="parameter service (default 127.0.0.1:8001)")
    untag = models.add_parser("untag", help="delete a named tag (its version is then retained as any other)")
    untag.add_argument("tag", help="a tag a publisher gave (not latest or best)")
    untag.add_argument("--address", default="127.0.0.1:8001", help="parameter service (default 127.0.0.1:8001)")
    render = commands.add_parser("render", help="record a policy playing, as MP4 or GIF")
    render.add_argument(
        "--model", default="latest", help="latest, best, solved, a tag, a version number, or a file from models pull"
    )
    render.add_argument("--run", metavar="RUN_DIR", help="take --model from a run directory of rlrings up")
    render.add_argument("--address", default="127.0.0.1:8001", help="parameter service (default 127.0.0.1:8001)")
    render.add_argument("--env", default=None, help="environment (default: the one the model was trained on)")
    render.add_argument("--episodes", type=int, default=1, help="episodes to record (default 1)")
    render.add_argument("--max-steps", type=int, default=1000, help="steps per episode at most (default 1000)")
    render.add_argument("--fps", type=float, default=30, help="frames per second (default 30)")
    render.add_argument("--out", default="agent.mp4", help="agent.mp4 or agent.gif (default agent.mp4)")
    info = commands.add_parser("info", help="describe the tables of a running replay server")
    info.add_argument("--address", default="127.0.0.1:8000", help="replay server address (default 127.0.0.1:8000)")
    health = commands.add_parser("health", help="check that services answer grpc.health.v1 with SERVING")
    health.add_argument("addresses", nargs="+", metavar="ADDRESS", help="host:port of a service")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait per service (default 5)")
    for command in (pull, listing, untag, render, info, health):
        _add_security_flags(command)
    described = commands.add_parser("algorithms", help="list the algorithms, or one's settings with their defaults")
    described.add_argument("name", nargs="?", help="an algorithm: its settings, types, defaults and meaning")
    make_tokens = commands.add_parser(
        "tokens", help="write a tokens file with one least-privilege token per component, for the chart's Secret"
    )
    make_tokens.add_argument(
        "action", nargs="?", choices=["add"], help="add: tokens for more clients, in the existing directory --out"
    )
    make_tokens.add_argument("clients", nargs="*", metavar="NAME=SCOPE,SCOPE", help="with add: the clients")
    make_tokens.add_argument("--out", default="tokens", help="directory to write to (default tokens)")
    make_tokens.add_argument(
        "--client", action="append", default=[], metavar="NAME=SCOPE,SCOPE",
        help="also a token for an outside client, for example game-uploads=insert (repeatable)",
    )  # fmt: skip
    make_certs = commands.add_parser("certs", help="make a development CA and a certificate for TLS")
    make_certs.add_argument("--out", default="certs", help="directory to write to (default certs)")
    make_certs.add_argument("--hosts", default="localhost,127.0.0.1", help="names and IPs the certificate is for")
    make_certs.add_argument("--name", default="rlrings", help="file name of the certificate (default rlrings)")
    make_certs.add_argument(
        "--force", action="store_true", help="replace a certificate of this name (a CA in --out is always kept)"
    )
    tables = commands.add_parser("tables", help="print the replay tables an env and algorithm need, as YAML")
    tables.add_argument("--env", default="CartPole-v1", help="environment (default CartPole-v1)")
    tables.add_argument("--algorithm", default=None, help="an algorithm (rlrings algorithms; default: the default one)")
    tables.add_argument(
        "--settings", default="{}", help="the algorithm's settings as JSON, e.g. '{\"unroll_length\": 32}'"
    )
    tables.add_argument("--table", default="experience", help="name of the learner's table (default experience)")
    tables.add_argument("--batch-size", type=int, default=None, help="learner batch (default: the algorithm's)")
    tables.add_argument("--actors", type=int, default=1, help="actors of the mesh (the chart's actor.replicas)")
    tables.add_argument(
        "--envs-per-actor", type=int, default=8, help="envs each actor steps (the chart's actor.numEnvs; default 8)"
    )
    commands.add_parser("cloud", help="the stack on Azure Kubernetes Service (see: rlrings cloud --help)")
    args = parser.parse_args(argv)
    if args.command == "algorithms":
        return _algorithms(args.name)
    if args.command == "tables":
        return _tables(args)
    if args.command == "certs":
        return _certs(args)
    if args.command == "tokens":
        return _tokens(args)
    try:
        security = _security(args)
    except (OSError, ValueError) as error:
        print(f"rlrings {args.command}: {error}", file=sys.stderr)
        return 2
    if args.command == "models" and args.action == "untag":
        return _untag(args.address, args.tag, security)
    if args.command == "models" and args.action == "list":
        return _list(args.run, args.address, security)
    if args.command == "models":
        return _pull(args.run, args.address, args.tag, args.version, args.out, security)
    if args.command == "render":
        return _render(args, security)
    if args.command == "health":
        return _health(args.addresses, args.timeout, security)
    return _info(args.address, security)


def _add_security_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS and tokens (the token itself comes from $RLRINGS_TOKEN)")
    group.add_argument("--ca-file", help="PEM CA that signed the servers' certificates: dial with TLS")
    group.add_argument("--cert-file", help="PEM client certificate, for servers that require one (mutual TLS)")
    group.add_argument("--key-file", help="PEM key of --cert-file")
    group.add_argument("--server-name", help="name expected in the server's certificate instead of the host dialled")


def _security(args):
    """How a command dials: TLS from its flags, the token from $RLRINGS_TOKEN (kept out of shell history)."""
    import os

    import pydantic

    from rlrings.rpc.security import AuthConfig, ClientSecurity, TlsConfig

    try:
        tls = TlsConfig(
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
            mutual=bool(args.cert_file),
            server_name=args.server_name,
        )
    except pydantic.ValidationError as error:
        raise ValueError("; ".join(problem["msg"] for problem in error.errors())) from None
    if args.cert_file and not args.ca_file:
        raise ValueError("--cert-file needs --ca-file")
    return ClientSecurity.of(tls, AuthConfig(token=os.environ.get("RLRINGS_TOKEN") or None))


def _algorithms(name: str | None) -> int:
    from rlrings import algorithms

    if name is not None and name not in algorithms.REGISTRY:
        print(f"rlrings algorithms: {algorithms.unknown(name)}", file=sys.stderr)
        return 2
    print(algorithms.describe(name))
    return 0


def _tokens(args) -> int:
    """``tokens.yaml`` (what servers accept) and ``<name>-token`` per token (what each presents),
    one directory that ``kubectl create secret generic NAME --from-file=DIR`` turns into the
    chart's auth Secret; each component's token holds only its :data:`COMPONENT_SCOPES`."""
    from pathlib import Path

    import yaml

    from rlrings.rpc.security import COMPONENT_SCOPES, SCOPES

    out = Path(args.out)
    adding = args.action == "add"
    if adding and not (out / "tokens.yaml").is_file():
        print(f"rlrings tokens add: {out / 'tokens.yaml'} does not exist; make it first with rlrings tokens --out "
              f"{out}", file=sys.stderr)  # fmt: skip
        return 2
    if args.clients and not adding:
        print(f"rlrings tokens: unexpected {args.clients[0]!r}; to add clients: rlrings tokens add NAME=SCOPES",
              file=sys.stderr)  # fmt: skip
        return 2
    existing = yaml.safe_load((out / "tokens.yaml").read_text()) if adding else []
    taken = {entry["name"] for entry in existing} | (set() if adding else set(COMPONENT_SCOPES))
    wanted = {} if adding else dict(COMPONENT_SCOPES)
    clients = [*args.clients, *args.client]
    if adding and not clients:
        print("rlrings tokens add: name at least one client, NAME=SCOPE,SCOPE", file=sys.stderr)
        return 2
    for client in clients:
        name, _, scopes = client.partition("=")
        listed = [scope.strip() for scope in scopes.split(",") if scope.strip()]
        unknown = sorted(set(listed) - set(SCOPES))
        if not name or not listed or unknown or name in taken or name in wanted:
            why = (f"unknown scopes {unknown}" if unknown else f"{name!r} has a token already" if name in taken
                   else "expected NAME=SCOPE,SCOPE with a new name")  # fmt: skip
            print(f"rlrings tokens: {client!r}: {why}; scopes: {', '.join(SCOPES)}", file=sys.stderr)
            return 2
        wanted[name] = listed
    if adding:
        return _add_tokens(out, existing, wanted)
    if (out / "tokens.yaml").exists():
        print(f"rlrings tokens: {out / 'tokens.yaml'} exists; give another --out (tokens are never replaced "
              "silently: every client holding one would be locked out)", file=sys.stderr)  # fmt: skip
        return 2
    out.mkdir(parents=True, exist_ok=True)
    entries = _write_tokens(out, [], wanted)
    keys = ", ".join(f"{name}: {name}-token" for name in COMPONENT_SCOPES)
    listing = "; ".join(f"{name}: {', '.join(scopes)}" for name, scopes in wanted.items())
    print(
        f"{len(entries)} tokens written to {out} ({listing}).\n"
        f"kubectl create secret generic rlrings-tokens --from-file={out}\n"
        f"helm values: security.auth: {{enabled: true, secretName: rlrings-tokens, internalTokenKey: '', "
        f"componentTokenKeys: {{{keys}}}}}"
    )
    return 0


def _write_tokens(out, existing: list[dict], wanted: dict[str, list[str]]) -> list[dict]:
    """A new random token for each of ``wanted`` (name -> scopes), each in ``out/<name>-token``, and
    ``out/tokens.yaml`` holding ``existing`` and them, replaced at once (a server reading it meanwhile
    sees the old file or the new); returns the new entries. Every file is readable by its owner only."""
    import secrets

    import yaml

    from rlrings.rpc.security import Token

    added = []
    for name, scopes in wanted.items():
        token = Token(name=name, token=secrets.token_urlsafe(32), scopes=scopes)
        added.append({"name": name, "token": token.token.get_secret_value(), "scopes": scopes})
        path = out / f"{name}-token"
        path.write_text(token.token.get_secret_value())
        path.chmod(0o600)
    temporary = out / "tokens.yaml.tmp"
    temporary.write_text(yaml.safe_dump([*existing, *added], sort_keys=False))
    temporary.chmod(0o600)
    temporary.replace(out / "tokens.yaml")
    return added


def _add_tokens(out, existing: list[dict], wanted: dict[str, list[str]]) -> int:
    """Appends tokens for ``wanted`` to the tokens file in ``out``; the tokens already there stay."""
    added = _write_tokens(out, existing, wanted)
    listing = "; ".join(f"{name}: {', '.join(scopes)}" for name, scopes in wanted.items())
    print(
        f"{len(added)} tokens added to {out / 'tokens.yaml'} ({listing}); each client's token is in {out}/NAME-token.\n"
        f"kubectl create secret generic rlrings-tokens --from-file={out} --dry-run=client -o yaml | kubectl apply -f -"
    )
    return 0


def _certs(args) -> int:
    """A certificate signed by the CA in ``--out``, made there first if there is none: a second run
    adds a certificate the same CA signed and never replaces the CA (that would void every
    certificate it signed before)."""
    from pathlib import Path

    from rlrings.rpc import certs

    out = Path(args.out)
    ca = certs.CertificatePair(out / "ca.pem", out / "ca-key.pem")
    pair = certs.CertificatePair(out / f"{args.name}.pem", out / f"{args.name}-key.pem")
    if ca.cert_file.exists() != ca.key_file.exists():
        print(f"rlrings certs: {out} holds half a CA (ca.pem or ca-key.pem is missing); restore it or use "
              "another --out", file=sys.stderr)  # fmt: skip
        return 2
    if pair.cert_file.exists() and not args.force:
        print(f"rlrings certs: {pair.cert_file} exists; give another --name, or --force to replace it", file=sys.stderr)
        return 2
    made = not ca.cert_file.exists()
    if made:
        ca = certs.make_ca(out)
    pair = certs.issue(ca, out, args.name, [h.strip() for h in args.hosts.split(",") if h.strip()])
    Console().print(
        f"CA: {ca.cert_file} ({'new' if made else 'existing, kept'}; key {ca.key_file}); certificate for "
        f"{args.hosts}: {pair.cert_file} (key {pair.key_file})"
    )
    return 0


def _up(argv: list[str]) -> int:
    from rlrings.core.errors import ConfigError
    from rlrings.mesh import MeshConfig, run_mesh
    from rlrings.rpc.config import load_config

    try:
        config = load_config(MeshConfig, argv, prog="rlrings up")
    except ConfigError as error:
        print(f"rlrings up: {error}", file=sys.stderr)
        return 2
    return run_mesh(config)


def _experiment(argv: list[str]) -> int:
    from rlrings.core.errors import ConfigError
    from rlrings.rpc.config import load_config

    if not argv or argv[0] != "fewshot":
        print("usage: rlrings experiment fewshot [--help] [settings]; the experiments: fewshot", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from rlrings.fewshot import FewShotConfig, run_experiment

    try:
        config = load_config(FewShotConfig, argv[1:], prog="rlrings experiment fewshot")
    except ConfigError as error:
        print(f"rlrings experiment fewshot: {error}", file=sys.stderr)
        return 2
    return run_experiment(config)


def _untag(address: str, tag: str, security) -> int:
    from rlrings.clients.parameter import ParameterClient
    from rlrings.core.errors import RlringsError

    try:
        with ParameterClient(address, security=security) as client:
            version = client.delete_tag(tag)
    except RlringsError as error:
        print(f"rlrings models untag: {error}", file=sys.stderr)
        return 1
    print(f"tag {tag!r} deleted; it pointed at version {version}")
    return 0


TAG_HELP = "solved (the version that solved the env), best (the highest confirmed evaluation), latest, or a named tag"


def run_weights(run: str):
    """The weights a run of ``rlrings up`` kept (its parameter service's directory), read-only.

    Raises:
        ValueError: ``run`` is not such a run directory, saying what one holds.
    """
    from pathlib import Path

    from rlrings.services.parameter.store import WeightDirectory

    path = Path(run)
    config = path / "configs" / "parameter.yaml"
    if not path.is_dir() or not config.is_file():
        raise ValueError(
            f"--run: {run} is not a run directory of rlrings up (one holds configs/parameter.yaml and the "
            f"weights it names; runs/<time> by default, or the --run-dir given)"
        )
    import yaml

    directory = Path((yaml.safe_load(config.read_text()) or {}).get("directory", path / "weights"))
    if not directory.is_absolute() and not directory.exists():
        directory = path / "weights"
    weights = WeightDirectory(directory)
    if not weights.latest_version:
        raise ValueError(f"--run: {run} holds no published version (in {directory}); the run published nothing")
    return weights


def _fetch(run: str | None, address: str, version: int, tag: str, security):
    """(header, weights) by version or tag, from a run directory or a parameter service."""
    if run:
        weights = run_weights(run)
        header = weights.header(version=version, tag="" if version else tag)
        return header, weights.read(header.version)
    from rlrings.clients.parameter import ParameterClient

    with ParameterClient(address, security=security) as client:
        return client.fetch(version=version, tag=tag)


def _pull(run: str | None, address: str, tag: str, version: int, out: str, security) -> int:
    from rlrings.clients.parameter import policy_from
    from rlrings.core.errors import RlringsError

    try:
        header, data = _fetch(run, address, version, tag, security)
        policy = policy_from(header, data)
    except (RlringsError, ValueError) as error:
        print(f"rlrings models pull: {error}", file=sys.stderr)
        return 2 if isinstance(error, ValueError) else 1
    policy.save(out)
    spec = policy.spec
    evaluated = (
        f"; evaluation {header.evaluation_return:,.1f} over {header.evaluation_episodes} fresh episodes"
        if header.HasField("evaluation_return")
        else ""
    )
    tags = f"; tags: {', '.join(sorted(header.tags))}" if header.tags else ""
    print(  # one line, unwrapped: scripts read it
        f"version {header.version} ({spec.architecture} for {spec.env_id}, actions {spec.describe_actions()}, "
        f"learner step {header.learner_step}) written to {out}{tags}{evaluated}"
    )
    return 0


def _list(run: str | None, address: str, security) -> int:
    from rlrings.core.errors import RlringsError

    try:
        if run:
            headers, tags = (weights := run_weights(run)).headers(), weights.tags()
        else:
            from rlrings.clients.parameter import ParameterClient

            with ParameterClient(address, security=security) as client:
                listing = client.list()
            headers, tags = list(listing.versions), dict(listing.tags)
    except (RlringsError, ValueError) as error:
        print(f"rlrings models list: {error}", file=sys.stderr)
        return 2 if isinstance(error, ValueError) else 1
    view = RichTable("version", "tags", "learner step", "evaluation", "episodes", "created")
    for header in headers:
        named = sorted(tag for tag, version in tags.items() if version == header.version)
        evaluated = header.HasField("evaluation_return")
        kind = " confirmed" if header.evaluation_confirmed else ""
        view.add_row(
            str(header.version),
            ", ".join(named),
            f"{header.learner_step:,}",
            f"{header.evaluation_return:,.1f}" if evaluated else "-",
            f"{header.evaluation_episodes}{kind}" if evaluated else "-",
            header.created.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if header.HasField("created") else "-",
        )
    Console(width=max(100, Console().width)).print(view)
    return 0


def _load_policy(model: str, run: str | None, address: str, security):
    """A Policy from a file, or by tag or version from a run directory or the parameter service."""
    from pathlib import Path

    from rlrings.clients.parameter import policy_from
    from rlrings.core.models import Policy

    if Path(model).is_file():
        return Policy.load(model)
    version, tag = (int(model), "") if model.isdigit() else (0, model)
    return policy_from(*_fetch(run, address, version, tag or "latest", security))


def _render(args, security) -> int:
    from rlrings.core.errors import RlringsError
    from rlrings.core.video import record_episodes, write_video

    console = Console()
    if args.episodes < 1:
        console.print(f"[red]rlrings render: --episodes: must be >= 1, got {args.episodes}[/]")
        return 2
    try:
        policy = _load_policy(args.model, args.run, args.address, security)
        env_id = args.env or policy.spec.env_id
        frames = record_episodes(policy, env_id, args.episodes, args.max_steps)
        write_video(frames, args.out, fps=args.fps)
    except (RlringsError, ValueError) as error:
        console.print(f"[red]rlrings render: {error}[/]")
        return 1
    console.print(f"{len(frames)} frames of {env_id} (model version {policy.version}) written to {args.out}")
    return 0


def _info(address: str, security) -> int:
    from rlrings.clients.replay import ReplayClient
    from rlrings.core.errors import RlringsError

    console = Console()
    try:
        with ReplayClient(address, security=security) as client:
            tables = client.info()
    except RlringsError as error:
        console.print(f"[red]rlrings info: {error}[/]")
        return 1
    view = RichTable("table", "selector", "size", "max size", "inserted", "sampled", "steps per item", "columns")
    withheld = set()
    for table in tables.values():
        columns = ", ".join(f"{c.name}{list(c.shape)}" for c in table.signature)
        withheld |= set(table.withheld)

        def shown(field: str, text: str, table=table) -> str:
            return "withheld" if field in table.withheld else text

        view.add_row(
            table.name,
            shown("selector", table.selector),
            shown("size", f"{table.size:,}"),
            shown("max_size", f"{table.max_size:,}"),
            shown("inserted_items", f"{table.inserted_items:,}"),
            shown("sampled_items", f"{table.sampled_items:,}"),
            str(table.sequence_length),
            columns,
        )
    console.print(view)
    if withheld:
        console.print(
            "[yellow]withheld: this token may insert but not read, so the server tells it what writing needs "
            "(columns, steps per item) and not the tables' state; a token with the 'read' scope sees it all[/]"
        )
    return 0


def _health(addresses: list[str], timeout: float, security) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from rlrings.rpc.client import describe_rpc_error

    console = Console()
    view = RichTable("service", "status")
    serving = 0
    for address in addresses:
        with security.channel(address, []) as channel:
            try:
                # no wait_for_ready: a refused connection is the answer, at once
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as error:
                status = describe_rpc_error(error, address)
        serving += status == "SERVING"
        view.add_row(address, f"[green]{status}[/]" if status == "SERVING" else f"[red]{status}[/]")
    console.print(view)
    return 0 if serving == len(addresses) else 1


def _tables(args) -> int:
    import json

    import yaml

    from rlrings import algorithms
    from rlrings.core import experience
    from rlrings.core.errors import ConfigError
    from rlrings.core.shape import MeshShape
    from rlrings.envs import env_spec

    try:
        spec = env_spec(args.env)
    except ConfigError as error:
        print(f"rlrings tables: {error}", file=sys.stderr)
        return 2
    try:  # the planner replay itself runs where no tables are given (rlrings up, the chart)
        algorithm = algorithms.get(args.algorithm or algorithms.DEFAULT)
        config = algorithm.config(**json.loads(args.settings))
        mesh = MeshShape(actors=args.actors, envs_per_actor=args.envs_per_actor, batch_size=args.batch_size)
        tables = experience.mesh_tables(config, spec, mesh, args.table)
    except (ConfigError, ValueError) as error:  # pydantic's ValidationError and JSON's are ValueErrors
        print(f"rlrings tables: {error}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(tables, sort_keys=False, default_flow_style=None), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

One parser reads every command line: pydantic-settings, from typed models whose field
docstrings are the help. The services, ``up`` and ``experiment`` parse their settings
classes through :func:`rlrings.rpc.config.load_config`; the tool commands below are
the subcommands of :class:`Command`, so a bad value is refused naming its flag.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Annotated

import pydantic
from pydantic_settings import BaseSettings, CliApp, CliPositionalArg, CliSubCommand, SettingsConfigDict, get_subcommand
from rich.console import Console
from rich.table import Table as RichTable

from rlrings.ops.cloud import CloudCommand
from rlrings.ops.flags import Flags, subcommand

SERVICES = {
    "replay": "rlrings.services.replay.server",
    "parameter": "rlrings.services.parameter.server",
    "learner": "rlrings.services.learner.server",
    "actor": "rlrings.services.actor.server",
    "viewer": "rlrings.services.viewer.server",
    "inference": "rlrings.services.inference.server",
}
PARAMETER = "127.0.0.1:8001"
TAG_HELP = "solved (the version that solved the env), best (the highest confirmed evaluation), latest, or a named tag"


class Dial(Flags):
    """Flags of the commands that dial a service: TLS (the token itself comes from $RLRINGS_TOKEN,
    kept out of shell history)."""

    ca_file: str | None = None
    """PEM CA that signed the servers' certificates: dial with TLS."""
    cert_file: str | None = None
    """PEM client certificate, for servers that require one (mutual TLS); needs --ca-file."""
    key_file: str | None = None
    """PEM key of --cert-file."""
    server_name: str | None = None
    """Name expected in the server's certificate instead of the host dialled."""

    def security(self):
        """How this command dials: TLS from its flags, the token from $RLRINGS_TOKEN."""
        import os

        from rlrings.rpc.security import AuthConfig, ClientSecurity, TlsConfig

        if self.cert_file and not self.ca_file:
            raise ValueError("--cert-file needs --ca-file")
        try:
            tls = TlsConfig(ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file,
                            mutual=bool(self.cert_file), server_name=self.server_name)  # fmt: skip
        except pydantic.ValidationError as error:
            raise ValueError("; ".join(problem["msg"] for problem in error.errors())) from None
        return ClientSecurity.of(tls, AuthConfig(token=os.environ.get("RLRINGS_TOKEN") or None))


class FromRunOrService(Dial):
    run: str | None = None
    """A run directory of rlrings up (read with no server), instead of --address."""
    address: str = PARAMETER
    """Parameter service."""

    @pydantic.model_validator(mode="after")
    def _one_place(self):
        if self.run is not None and "address" in self.model_fields_set:
            raise ValueError("--run and --address: give one of them")
        return self


class Pull(FromRunOrService):
    """Write a model to a file: weights and what rebuilds it (from a running service or a run directory)."""

    tag: str = pydantic.Field(default="latest", description=TAG_HELP)
    version: pydantic.NonNegativeInt = 0
    """A version number instead of a tag."""
    out: str = "model.pt"
    """File to write."""


class ListModels(FromRunOrService):
    """Versions with their tags and evaluations."""


class Untag(Dial):
    """Delete a named tag (its version is then retained as any other)."""

    tag: CliPositionalArg[str]
    """A tag a publisher gave (not latest or best)."""
    address: str = PARAMETER
    """Parameter service."""


class Models(Flags):
    """Trained models."""

    pull: CliSubCommand[Pull] = subcommand(Pull)
    list: CliSubCommand[ListModels] = subcommand(ListModels)
    untag: CliSubCommand[Untag] = subcommand(Untag)


class Render(FromRunOrService):
    """Record a policy playing, as MP4 or GIF."""

    model: str = "latest"
    """latest, best, solved, a tag, a version number, or a file from models pull (then --run and
    --address are not read)."""
    env: str | None = None
    """Environment (default: the one the model was trained on)."""
    episodes: pydantic.PositiveInt = 1
    """Episodes to record."""
    max_steps: pydantic.PositiveInt = 1000
    """Steps per episode at most."""
    fps: pydantic.PositiveFloat = 30
    """Frames per second."""
    out: str = "agent.mp4"
    """agent.mp4 or agent.gif."""


class Info(Dial):
    """Describe the tables of a running replay server."""

    address: str = "127.0.0.1:8000"
    """Replay server."""


class Health(Dial):
    """Check that services answer grpc.health.v1 with SERVING."""

    addresses: CliPositionalArg[list[str]] = pydantic.Field(min_length=1)
    """host:port of each service."""
    timeout: pydantic.PositiveFloat = 5.0
    """Seconds to wait per service."""


class Algorithms(Flags):
    """List the algorithms, or one's settings with their defaults."""

    name: CliPositionalArg[str | None] = None
    """An algorithm: its settings, types, defaults and meaning."""


def _clients(items: list[str]) -> list[str]:
    """NAME=SCOPE,SCOPE entries as typed: the parser splits list values at commas, and a piece
    with no '=' is a further scope of the client before it."""
    clients: list[str] = []
    for item in items:
        if "=" in item or not clients:
            clients.append(item)
        else:
            clients[-1] += f",{item}"
    return clients


Clients = Annotated[list[str], pydantic.BeforeValidator(_clients)]


class TokensAdd(Flags):
    """Tokens for more clients, in an existing directory --out (the tokens there stay)."""

    clients: CliPositionalArg[Clients] = pydantic.Field(min_length=1)
    """NAME=SCOPE,SCOPE of each client."""
    out: str = "tokens"
    """Directory that holds tokens.yaml."""


class Tokens(Flags):
    """Write a tokens file with one least-privilege token per component, for the chart's Secret."""

    out: str = "tokens"
    """Directory to write to."""
    client: Clients = []
    """Also a token for an outside client, NAME=SCOPE,SCOPE, for example game-uploads=insert (repeatable)."""
    add: CliSubCommand[TokensAdd] = subcommand(TokensAdd)


class Certs(Flags):
    """Make a development CA and a certificate for TLS."""

    out: str = "certs"
    """Directory to write to."""
    hosts: str = "localhost,127.0.0.1"
    """Names and IPs the certificate is for."""
    name: str = "rlrings"
    """File name of the certificate."""
    force: bool = False
    """Replace a certificate of this name (a CA in --out is always kept)."""


class Tables(Flags):
    """Print the replay tables an env and algorithm need, as YAML."""

    env: str = "CartPole-v1"
    """Environment."""
    algorithm: str | None = None
    """An algorithm (rlrings algorithms; default: the default one)."""
    settings: str = "{}"
    """The algorithm's settings as JSON, e.g. '{"unroll_length": 32}'."""
    table: str = "experience"
    """Name of the learner's table."""
    batch_size: pydantic.PositiveInt | None = None
    """Learner batch (default: the algorithm's)."""
    actors: pydantic.PositiveInt = 1
    """Actors of the mesh (the chart's actor.replicas)."""
    envs_per_actor: pydantic.PositiveInt = 8
    """Envs each actor steps (the chart's actor.numEnvs)."""


class Elsewhere(Flags):
    """A command that parses its own settings (its --help lists them)."""


def _elsewhere(text: str):
    return pydantic.Field(description=text)


class Command(BaseSettings):
    """Distributed RL as a gRPC microservice mesh (rlrings --version: which version)."""

    model_config = SettingsConfigDict(
        cli_prog_name="rlrings", cli_kebab_case=True, cli_implicit_flags=True, use_attribute_docstrings=True,
        extra="forbid", cli_exit_on_error=True,
    )  # fmt: skip

    up: CliSubCommand[Elsewhere] = _elsewhere("run the whole mesh on this machine (see: rlrings up --help)")
    experiment: CliSubCommand[Elsewhere] = _elsewhere("experiments: fewshot (see: rlrings experiment fewshot --help)")
    replay: CliSubCommand[Elsewhere] = _elsewhere("run one replay service (see: rlrings replay --help)")
    parameter: CliSubCommand[Elsewhere] = _elsewhere("run one parameter service (see: rlrings parameter --help)")
    learner: CliSubCommand[Elsewhere] = _elsewhere("run one learner (see: rlrings learner --help)")
    actor: CliSubCommand[Elsewhere] = _elsewhere("run one actor (see: rlrings actor --help)")
    viewer: CliSubCommand[Elsewhere] = _elsewhere("run one viewer (see: rlrings viewer --help)")
    inference: CliSubCommand[Elsewhere] = _elsewhere("run one inference service (see: rlrings inference --help)")
    models: CliSubCommand[Models] = subcommand(Models)
    render: CliSubCommand[Render] = subcommand(Render)
    info: CliSubCommand[Info] = subcommand(Info)
    health: CliSubCommand[Health] = subcommand(Health)
    algorithms: CliSubCommand[Algorithms] = subcommand(Algorithms)
    tokens: CliSubCommand[Tokens] = subcommand(Tokens)
    certs: CliSubCommand[Certs] = subcommand(Certs)
    tables: CliSubCommand[Tables] = subcommand(Tables)
    cloud: CliSubCommand[CloudCommand] = subcommand(CloudCommand)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, **others):
        return (init_settings,)  # the command line alone (the services read their environment themselves)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("--help", [])
    if command in ("--version", "-V"):
        from rlrings import __version__

        print(f"rlrings {__version__}")
        return 0
    # the mesh and each service parse their own settings (flags, environment, --config file) with
    # the same pydantic-settings parser, through rlrings.rpc.config.load_config
    if command in SERVICES:
        return importlib.import_module(SERVICES[command]).main(rest)
    if command == "up":
        return _up(rest)
    if command == "experiment":
        return _experiment(rest)
    try:
        parsed = CliApp.run(Command, cli_args=argv)
    except pydantic.ValidationError as error:
        print(f"rlrings {command}: {_flag_problems(error)}", file=sys.stderr)
        return 2
    return _run(command, get_subcommand(parsed), argv)  # (the parser has printed help where there was none)


def _flag_problems(error: pydantic.ValidationError) -> str:
    """A validation error as the flags the user typed: --tenant-id: Field required."""
    problems = []
    for problem in error.errors():
        where = [str(part) for part in problem["loc"] if not isinstance(part, int)][-1:] or ["flags"]
        message = problem["msg"].removeprefix("Value error, ")
        if message.startswith("--"):  # a check across flags names them itself
            problems.append(message)
            continue
        flag = "--" + where[0].replace("_", "-") if where != ["flags"] else "flags"
        problems.append(f"{flag}: {message}")
    return "; ".join(problems)


def _run(command: str, chosen: Flags, argv: list[str]) -> int:
    """Runs the command the parser picked."""
    if isinstance(chosen, (Models, CloudCommand)) and get_subcommand(chosen, is_required=False) is None:
        choices = ", ".join(name for name, value in chosen if value is None)
        print(f"rlrings {command}: name one of {choices} (rlrings {command} --help)", file=sys.stderr)
        return 2
    if isinstance(chosen, CloudCommand):
        return chosen.run(argv[1:])
    if isinstance(chosen, Algorithms):
        return _algorithms(chosen.name)
    if isinstance(chosen, Tables):
        return _tables(chosen)
    if isinstance(chosen, Certs):
        return _certs(chosen)
    if isinstance(chosen, Tokens):
        adding = get_subcommand(chosen, is_required=False)
        return _tokens(adding.out if adding else chosen.out, adding is not None,
                       [*(adding.clients if adding else []), *chosen.client])  # fmt: skip
    if isinstance(chosen, Models):
        chosen = get_subcommand(chosen)
    try:
        security = chosen.security()
    except (OSError, ValueError) as error:
        print(f"rlrings {command}: {error}", file=sys.stderr)
        return 2
    if isinstance(chosen, Untag):
        return _untag(chosen.address, chosen.tag, security)
    if isinstance(chosen, ListModels):
        return _list(chosen.run, chosen.address, security)
    if isinstance(chosen, Pull):
        return _pull(chosen.run, chosen.address, chosen.tag, chosen.version, chosen.out, security)
    if isinstance(chosen, Render):
        return _render(chosen, security)
    if isinstance(chosen, Health):
        return _health(chosen.addresses, chosen.timeout, security)
    return _info(chosen.address, security)


def _algorithms(name: str | None) -> int:
    from rlrings import algorithms

    if name is not None and name not in algorithms.REGISTRY:
        print(f"rlrings algorithms: {algorithms.unknown(name)}", file=sys.stderr)
        return 2
    print(algorithms.describe(name))
    return 0


def _tokens(out: str, adding: bool, clients: list[str]) -> int:
    """``tokens.yaml`` (what servers accept) and ``<name>-token`` per token (what each presents),
    one directory that ``kubectl create secret generic NAME --from-file=DIR`` turns into the
    chart's auth Secret; each component's token holds only its :data:`COMPONENT_SCOPES`."""
    from pathlib import Path

    import yaml

    from rlrings.rpc.security import COMPONENT_SCOPES, SCOPES

    out = Path(out)
    if adding and not (out / "tokens.yaml").is_file():
        print(f"rlrings tokens add: {out / 'tokens.yaml'} does not exist; make it first with rlrings tokens --out "
              f"{out}", file=sys.stderr)  # fmt: skip
        return 2
    existing = yaml.safe_load((out / "tokens.yaml").read_text()) if adding else []
    taken = {entry["name"] for entry in existing} | (set() if adding else set(COMPONENT_SCOPES))
    wanted = {} if adding else dict(COMPONENT_SCOPES)
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

"""The ``rlrings`` command line.

``rlrings up`` runs the local mesh; ``rlrings replay ...`` runs one replay
server (its flags are the service's settings; see ``rlrings replay --help``);
``rlrings info`` describes a running replay server's tables.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="rlrings", description="Distributed RL as a gRPC microservice mesh.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the local mesh on this machine (embedded store)")
    up.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    up.add_argument(
        "--run-dir", type=Path, default=None, help="where logs, configs and snapshots go (default runs/<time>)"
    )

    commands.add_parser(
        "replay", help="run a replay server; its flags follow (see: rlrings replay --help)", add_help=False
    )

    info = commands.add_parser("info", help="describe the tables of a running replay server")
    info.add_argument("--address", default="127.0.0.1:8000", help="replay server address (default 127.0.0.1:8000)")

    if argv[:1] == ["replay"]:  # the service parses its own flags
        from services.replay.server import main as replay_main

        return replay_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "up":
        from rlrings.local import run_local

        if args.seconds <= 0:
            parser.error(f"--seconds: must be > 0, got {args.seconds}")
        run_dir = args.run_dir or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
        return run_local(args.seconds, run_dir)
    if args.command == "info":
        return _info(args.address)
    return 2


def _info(address: str) -> int:
    from rlrings.errors import RlringsError
    from rlrings.replay_client import ReplayClient

    console = Console()
    try:
        with ReplayClient(address) as client:
            tables = client.info()
    except RlringsError as error:
        console.print(f"[red]rlrings info: {error}[/]")
        return 1
    view = RichTable("table", "selector", "size", "max size", "inserted", "sampled", "columns")
    for table in tables.values():
        columns = ", ".join(f"{c.name}{list(c.shape)}" for c in table.signature)
        view.add_row(
            table.name,
            table.selector,
            f"{table.size:,}",
            f"{table.max_size:,}",
            f"{table.inserted_items:,}",
            f"{table.sampled_items:,}",
            columns,
        )
    console.print(view)
    return 0


if __name__ == "__main__":
    sys.exit(main())

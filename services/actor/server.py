"""The actor process: the acting loop plus its gRPC status service."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence

from rlrings.config import load_config
from rlrings.errors import ConfigError, RlringsError
from rlrings.server import Server
from rlrings.v1 import actor_pb2, actor_pb2_grpc
from services.actor.actor import Actor
from services.actor.config import ActorConfig
from services.actor.metrics import ActorCollector
from services.actor.servicer import ActorServicer

SERVICE_NAME = actor_pb2.DESCRIPTOR.services_by_name["ActorService"].full_name
log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(ActorConfig, sys.argv[1:] if argv is None else argv)
        logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        actor = Actor(config)
    except ConfigError as error:
        print(f"rlrings actor: {error}", file=sys.stderr)
        return 2
    server = Server(config, "actor")
    server.add(actor_pb2_grpc.add_ActorServiceServicer_to_server, ActorServicer(actor), SERVICE_NAME)
    server.registry.register(ActorCollector(actor))
    outcome: dict[str, BaseException] = {}

    def act(_server: Server) -> None:
        def loop():
            try:
                actor.connect()
                actor.run()
            except BaseException as error:  # reported, then the process stops
                outcome["error"] = error
                server.request_stop()

        threading.Thread(target=loop, name="acting", daemon=True).start()

    try:
        server.run(on_stop=actor.close, drain=actor.stopped.set, ready=act)
    except OSError as error:
        print(f"rlrings actor: {error}", file=sys.stderr)
        return 1
    error = outcome.get("error")
    if isinstance(error, ConfigError):
        print(f"rlrings actor: {error}", file=sys.stderr)
        return 2
    if error is not None and not isinstance(error, RlringsError):
        log.error("acting loop failed", exc_info=error)
        return 1
    if error is not None:
        print(f"rlrings actor: {error}", file=sys.stderr)
        return 1
    return 0

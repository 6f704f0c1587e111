"""The actor process: the acting loop plus its gRPC status service."""

from __future__ import annotations

from collections.abc import Sequence

from rlrings.rpc.server import Server, Service, service_main
from rlrings.services.actor.actor import Actor
from rlrings.services.actor.config import ActorConfig
from rlrings.services.actor.metrics import ActorCollector
from rlrings.services.actor.servicer import ActorServicer
from rlrings.v1 import actor_pb2, actor_pb2_grpc

SERVICE_NAME = actor_pb2.DESCRIPTOR.services_by_name["ActorService"].full_name


def build(config: ActorConfig) -> Service:
    actor = Actor(config)
    server = Server(config, "actor")
    server.add(actor_pb2_grpc.add_ActorServiceServicer_to_server, ActorServicer(actor), SERVICE_NAME)
    server.registry.register(ActorCollector(actor))
    server.registry.register(actor.returns)

    def act() -> None:
        actor.connect()
        actor.run()

    return Service(server, on_stop=actor.close, drain=actor.stopped.set, loop=act)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m rlrings.services.actor`` and ``rlrings actor``."""
    return service_main("actor", ActorConfig, build, argv)

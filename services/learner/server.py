"""The learner process: the training loop plus its gRPC status service."""

from __future__ import annotations

from collections.abc import Sequence

from rlrings.core.errors import ConfigError
from rlrings.ops.processes import finish_process
from rlrings.rpc.server import Server, Service, service_main
from rlrings.services.learner.config import LearnerConfig
from rlrings.services.learner.learner import Learner
from rlrings.services.learner.metrics import LearnerCollector
from rlrings.services.learner.servicer import LearnerServicer
from rlrings.v1 import learner_pb2, learner_pb2_grpc

SERVICE_NAME = learner_pb2.DESCRIPTOR.services_by_name["LearnerService"].full_name


def build(config: LearnerConfig) -> Service:
    try:
        learner = Learner(config)
    except ValueError as error:  # an unknown architecture, for one
        raise ConfigError(str(error)) from None
    server = Server(config, "learner")
    server.add(learner_pb2_grpc.add_LearnerServiceServicer_to_server, LearnerServicer(learner), SERVICE_NAME)
    server.registry.register(LearnerCollector(learner))
    return Service(server, on_stop=learner.close, drain=learner.stopped.set, loop=learner.run)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m rlrings.services.learner`` and ``rlrings learner``."""
    return finish_process(service_main("learner", LearnerConfig, build, argv))

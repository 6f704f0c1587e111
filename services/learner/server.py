"""The learner process: the training loop plus its gRPC status service."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence

from rlrings.config import load_config
from rlrings.errors import ConfigError
from rlrings.server import Server
from rlrings.v1 import learner_pb2, learner_pb2_grpc
from services.learner.config import LearnerConfig
from services.learner.learner import Learner
from services.learner.metrics import LearnerCollector
from services.learner.servicer import LearnerServicer

SERVICE_NAME = learner_pb2.DESCRIPTOR.services_by_name["LearnerService"].full_name
log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(LearnerConfig, sys.argv[1:] if argv is None else argv)
        logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        learner = Learner(config)
    except (ConfigError, ValueError) as error:
        print(f"rlrings learner: {error}", file=sys.stderr)
        return 2
    server = Server(config, "learner")
    server.add(learner_pb2_grpc.add_LearnerServiceServicer_to_server, LearnerServicer(learner), SERVICE_NAME)
    server.registry.register(LearnerCollector(learner))
    outcome: dict[str, BaseException] = {}

    def train(_server: Server) -> None:
        def loop():
            try:
                learner.run()
            except BaseException as error:  # reported, then the process stops
                if not learner.stopped.is_set():  # errors of an orderly stop are not failures
                    outcome["error"] = error
            server.request_stop()

        threading.Thread(target=loop, name="training", daemon=True).start()

    try:
        server.run(on_stop=learner.close, drain=learner.stopped.set, ready=train)
    except OSError as error:
        print(f"rlrings learner: {error}", file=sys.stderr)
        return 1
    if "error" in outcome:
        log.error("training loop failed", exc_info=outcome["error"])
        return 1
    return 0

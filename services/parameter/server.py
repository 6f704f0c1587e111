"""The parameter server and its entry point."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from rlrings.config import load_config
from rlrings.errors import ConfigError
from rlrings.server import Server
from rlrings.v1 import parameter_pb2, parameter_pb2_grpc
from services.parameter.config import ParameterConfig
from services.parameter.servicer import ParameterServicer
from services.parameter.store import WeightStore

SERVICE_NAME = parameter_pb2.DESCRIPTOR.services_by_name["ParameterService"].full_name


class ParameterServer:
    def __init__(self, config: ParameterConfig):
        self.config = config
        self.store = WeightStore(config.directory, config.keep_versions)
        self.server = Server(config, "parameter")
        self.server.add(
            parameter_pb2_grpc.add_ParameterServiceServicer_to_server,
            ParameterServicer(self.store, config.max_model_bytes, config.piece_bytes),
            SERVICE_NAME,
        )

    @property
    def address(self) -> str:
        return self.server.address

    def start(self) -> ParameterServer:
        self.server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace, drain=self.store.close)

    def run(self) -> int:
        return self.server.run(drain=self.store.close)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(ParameterConfig, sys.argv[1:] if argv is None else argv)
        logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        server = ParameterServer(config)
        return server.run()
    except ConfigError as error:
        print(f"rlrings parameter: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"rlrings parameter: {error}", file=sys.stderr)
        return 1

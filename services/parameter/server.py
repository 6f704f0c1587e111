"""The parameter server and its entry point."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rlrings.rpc.server import Server, Service, service_main
from rlrings.services.parameter.config import ParameterConfig
from rlrings.services.parameter.servicer import ParameterServicer
from rlrings.services.parameter.store import WeightStore
from rlrings.v1 import parameter_pb2, parameter_pb2_grpc

SERVICE_NAME = parameter_pb2.DESCRIPTOR.services_by_name["ParameterService"].full_name


class EvaluationCollector(Collector):
    """The evaluator's reports (through ReportEvaluation), read at scrape time."""

    def __init__(self, store: WeightStore):
        self.store = store

    def collect(self):
        if self.store.last_evaluation is None:
            return
        version, value = self.store.last_evaluation
        evaluated = GaugeMetricFamily("rlrings_parameter_evaluated_version", "Version of the last evaluation report.")
        evaluated.add_metric([], version)
        returns = GaugeMetricFamily(
            "rlrings_parameter_evaluation_return", "Mean return the evaluator last reported (fresh episodes)."
        )
        returns.add_metric([], value)
        yield from (evaluated, returns)


class ParameterServer:
    def __init__(self, config: ParameterConfig):
        self.config = config
        self.store = WeightStore(config.directory, config.keep_versions, config.max_named_tags, config.max_holds)
        self.server = Server(config, "parameter")
        self.server.add(
            parameter_pb2_grpc.add_ParameterServiceServicer_to_server,
            ParameterServicer(self.store, config.max_model_bytes, config.piece_bytes),
            SERVICE_NAME,
        )
        self.server.registry.register(EvaluationCollector(self.store))

    @property
    def address(self) -> str:
        return self.server.address

    def start(self) -> ParameterServer:
        self.server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace, drain=self.store.close)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m rlrings.services.parameter`` and ``rlrings parameter``."""

    def build(config: ParameterConfig) -> Service:
        server = ParameterServer(config)
        return Service(server.server, drain=server.store.close)

    return service_main("parameter", ParameterConfig, build, argv)

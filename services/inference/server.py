"""The inference server and its entry point.

A process of its own beside the learner, on the same device, rather than a thread of the
learner: the learner's Python thread is busy with updates (and holds the GIL between kernel
launches), so forward passes there would wait on training and training on them; two processes
share one GPU and each keeps its own thread free. Weights come the way they come to everyone,
through the parameter service, a publish (``publish_every`` updates) behind the learner.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rlrings.clients.parameter import ParameterClient
from rlrings.core.devices import resolve_device
from rlrings.rpc.server import Server, Service, service_main
from rlrings.services.inference.batcher import Batcher, Models
from rlrings.services.inference.config import InferenceConfig
from rlrings.services.inference.servicer import InferenceServicer
from rlrings.v1 import inference_pb2, inference_pb2_grpc

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name


class DeviceCollector(Collector):
    """The device's busy share and the version answering, read at scrape time."""

    def __init__(self, batcher: Batcher, models: Models):
        self.batcher, self.models = batcher, models

    def collect(self):
        busy = GaugeMetricFamily(
            "rlrings_inference_device_busy_ratio", "Share of the time since start spent in forward passes."
        )
        busy.add_metric([], self.batcher.busy_share())
        latest = self.models.follower.latest()
        version = GaugeMetricFamily("rlrings_inference_version", "Newest weights' version that has arrived.")
        version.add_metric([], latest[0].version if latest else 0)
        yield from (busy, version)


class InferenceServer:
    def __init__(self, config: InferenceConfig):
        self.config = config
        torch.set_num_threads(config.torch_threads)
        self.device = resolve_device(config.device)
        self.server = Server(config, "inference")
        parameters = ParameterClient(config.parameter_address, security=config.client_security())
        self.models = Models(parameters, self.device, config.pinned_models, config.tag_seconds)
        self.batcher = Batcher(self.device, config.max_batch, config.max_wait_ms / 1000, self.server.registry)
        servicer = InferenceServicer(
            self.models, self.batcher, config.max_observations_per_request, config.max_in_flight_per_stream,
            config.max_version_wait_seconds,
        )  # fmt: skip
        self.server.add(inference_pb2_grpc.add_InferenceServiceServicer_to_server, servicer, SERVICE_NAME)
        self.server.registry.register(DeviceCollector(self.batcher, self.models))

    @property
    def address(self) -> str:
        return self.server.address

    def start(self) -> InferenceServer:
        self.batcher.start()
        self.server.start()
        return self

    def close(self) -> None:
        self.batcher.stop()
        self.models.close()

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace)
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m rlrings.services.inference`` and ``rlrings inference``."""

    def build(config: InferenceConfig) -> Service:
        server = InferenceServer(config)
        server.batcher.start()
        return Service(server.server, on_stop=server.close)

    return service_main("inference", InferenceConfig, build, argv)

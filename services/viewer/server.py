"""The viewer process: the web page and the gRPC ViewerService."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from rlrings.core.errors import ConfigError
from rlrings.rpc.server import Server, Service, service_main
from rlrings.services.viewer.config import ViewerConfig
from rlrings.services.viewer.metrics import ViewerCollector
from rlrings.services.viewer.servicer import ViewerServicer
from rlrings.services.viewer.viewer import Viewer
from rlrings.services.viewer.web import WebServer
from rlrings.v1 import viewer_pb2, viewer_pb2_grpc

SERVICE_NAME = viewer_pb2.DESCRIPTOR.services_by_name["ViewerService"].full_name


def build(config: ViewerConfig) -> Service:
    try:
        viewer = Viewer(config)
    except ValueError as error:  # an env without a key map
        raise ConfigError(str(error)) from None
    server = Server(config, "viewer")
    server.add(viewer_pb2_grpc.add_ViewerServiceServicer_to_server, ViewerServicer(viewer), SERVICE_NAME)
    server.registry.register(ViewerCollector(viewer))
    web = WebServer(viewer, config.host, config.http_port, server.interceptor.admission, config.tls)
    server_stopped = threading.Event()

    def serve_page() -> None:  # runs until the process stops
        web.start()
        server_stopped.wait()

    def stop() -> None:
        server_stopped.set()
        web.stop()
        viewer.close()

    return Service(server, on_stop=stop, drain=server_stopped.set, loop=serve_page)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m rlrings.services.viewer`` and ``rlrings viewer``."""
    return service_main("viewer", ViewerConfig, build, argv)

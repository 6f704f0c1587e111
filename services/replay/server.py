"""The replay server: a :class:`Replay` behind gRPC, and its entry point."""

from __future__ import annotations

from collections.abc import Sequence

from rlrings.errors import ConfigError
from rlrings.server import Server, Service, service_main
from rlrings.v1 import replay_pb2, replay_pb2_grpc
from services.replay.config import ReplayConfig
from services.replay.metrics import ReplayCollector
from services.replay.replay import Replay
from services.replay.servicer import ReplayServicer
from services.replay.store import SnapshotStore

SERVICE_NAME = replay_pb2.DESCRIPTOR.services_by_name["ReplayService"].full_name


class ReplayServer:
    """Builds the replay service; ``start()``/``stop()`` for tests, :func:`main` for processes."""

    def __init__(self, config: ReplayConfig):
        self.config = config
        if config.store == "cassandra":
            raise ConfigError(
                "store: 'cassandra' is not available in this release of the replay service "
                "(its settings are accepted so that deployments can be prepared); use store: embedded"
            )
        store = SnapshotStore(config.snapshot_dir) if config.store == "embedded" else None
        self.replay = Replay(
            config.tables,
            store=store,
            snapshot_interval_seconds=config.snapshot_interval_seconds,
            max_item_bytes=config.max_message_bytes - 64 * 1024,
        )
        self.server = Server(config, "replay")
        self.server.add(
            replay_pb2_grpc.add_ReplayServiceServicer_to_server,
            ReplayServicer(self.replay, config.max_message_bytes),
            SERVICE_NAME,
        )
        self.server.registry.register(ReplayCollector(self.replay))

    @property
    def address(self) -> str:
        return self.server.address

    def start(self) -> ReplayServer:
        self.server.start()
        return self

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace, drain=self.replay.release_waiters)
        self.replay.close()

    def service(self) -> Service:
        return Service(self.server, on_stop=self.replay.close, drain=self.replay.release_waiters)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m services.replay`` and ``rlrings replay``."""
    return service_main("replay", ReplayConfig, lambda config: ReplayServer(config).service(), argv)

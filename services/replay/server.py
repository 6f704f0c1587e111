"""The replay server: a :class:`Replay` behind gRPC, and its entry point."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from rlrings.rpc.server import Server, Service, service_main
from rlrings.services.replay.ack_log import AckLog
from rlrings.services.replay.cassandra_store import CassandraStore
from rlrings.services.replay.config import ReplayConfig
from rlrings.services.replay.metrics import ReplayCollector
from rlrings.services.replay.replay import Replay
from rlrings.services.replay.servicer import ReplayServicer
from rlrings.services.replay.store import SnapshotStore
from rlrings.v1 import replay_pb2, replay_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = replay_pb2.DESCRIPTOR.services_by_name["ReplayService"].full_name


class ReplayServer:
    """Builds the replay service; ``start()``/``stop()`` for tests, :func:`main` for processes."""

    def __init__(self, config: ReplayConfig):
        self.config = config
        store = SnapshotStore(config.snapshot_dir) if config.store == "embedded" else None
        if store is not None:
            store.check_writable()  # (found at start, not at the first snapshot minutes later)
        logged = store is not None and config.ack_log.enabled
        ack_log = AckLog(config.snapshot_dir / "acklog", config.ack_log.sync) if logged else None
        ring = CassandraStore(config.cassandra) if config.store == "cassandra" else None
        self.replay = Replay(
            config.tables,
            store=store,
            snapshot_interval_seconds=config.snapshot_interval_seconds,
            max_item_bytes=config.max_message_bytes - 64 * 1024,
            ring=ring,
            max_chunk_bytes=config.max_chunk_bytes,
            ack_log=ack_log,
            ack_log_config=config.ack_log,
        )
        self.server = Server(config, "replay")
        self.server.serving_at_start = ring is None
        self.server.add(
            replay_pb2_grpc.add_ReplayServiceServicer_to_server,
            ReplayServicer(self.replay, config.max_message_bytes, config.max_sample_batch_size),
            SERVICE_NAME,
        )
        self.server.registry.register(ReplayCollector(self.replay))
        self._ring_thread: threading.Thread | None = None
        self.ring_error: BaseException | None = None

    @property
    def address(self) -> str:
        return self.server.address

    def start(self) -> ReplayServer:
        """Serves; with a ring, health says NOT_SERVING until it is connected and the tables rebuilt."""
        self.server.start()
        if self.replay.ring is not None:
            self._ring_thread = threading.Thread(target=self._serve_ring, name="replay-ring", daemon=True)
            self._ring_thread.start()
        return self

    def _serve_ring(self) -> None:
        try:
            self.serve_ring()
        except BaseException as error:
            self.ring_error = error
            log.error("replay cannot serve: %s", error)

    def serve_ring(self) -> None:
        self.replay.serve_ring(on_ready=lambda: self.server.set_serving(True))

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace, drain=self.replay.release_waiters)
        self.replay.close()
        if self._ring_thread is not None:
            self._ring_thread.join(timeout=30)

    def service(self) -> Service:
        return Service(
            self.server,
            on_stop=self.replay.close,
            drain=self.replay.release_waiters,
            loop=self.serve_ring if self.replay.ring is not None else None,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m rlrings.services.replay`` and ``rlrings replay``."""
    return service_main("replay", ReplayConfig, lambda config: ReplayServer(config).service(), argv)

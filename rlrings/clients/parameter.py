"""Client of the parameter service.

Learners publish with :meth:`ParameterClient.publish`; users download with
:meth:`ParameterClient.policy` or :meth:`ParameterClient.fetch` (or ``rlrings models pull``); actors keep a
:class:`WeightsFollower`, which watches for new versions and fetches them in
a background thread, so the env loop only swaps in what has already arrived.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import grpc

from rlrings.core.errors import UnavailableError
from rlrings.rpc.backoff import Backoff
from rlrings.rpc.client import DEFAULT_MAX_MESSAGE_BYTES, ServiceClient, from_rpc_error
from rlrings.rpc.security import PLAINTEXT, ClientSecurity
from rlrings.v1 import parameter_pb2, parameter_pb2_grpc, spaces_pb2

if TYPE_CHECKING:
    from rlrings.core.models import Policy

log = logging.getLogger(__name__)
_PIECE_BYTES = 1024 * 1024


class ParameterClient(ServiceClient):
    service = "parameter"

    def __init__(
        self, address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, security: ClientSecurity = PLAINTEXT
    ):
        """``security``: TLS and token to dial with (a service passes ``config.client_security()``)."""
        super().__init__(address, max_message_bytes, security)
        self._stub = parameter_pb2_grpc.ParameterServiceStub(self._channel)

    def publish(
        self,
        data: bytes,
        model: spaces_pb2.ModelSpec,
        learner_step: int = 0,
        format: str = "torch.state_dict",
        tags: Sequence[str] = (),
    ) -> int:
        """Publishes serialized weights, under named ``tags`` if given (each moves
        to this version and keeps it from retention); returns the version assigned."""
        header = parameter_pb2.WeightsHeader(
            model=model,
            format=format,
            total_bytes=len(data),
            sha256=hashlib.sha256(data).digest(),
            learner_step=learner_step,
            tags=tags,
        )

        def requests():
            yield parameter_pb2.PublishRequest(header=header)
            for start in range(0, len(data), _PIECE_BYTES):
                yield parameter_pb2.PublishRequest(data=data[start : start + _PIECE_BYTES])

        try:
            return self._stub.Publish(requests(), timeout=300).version
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def fetch(
        self,
        version: int = 0,
        tag: str = "latest",
        header_only: bool = False,
        timeout: float = 300,
        hold_seconds: float = 0.0,
    ) -> tuple[parameter_pb2.WeightsHeader, bytes]:
        """Downloads a version (or the one ``tag`` points at); checks its sha256. ``hold_seconds``
        keeps it from pruning that long, or until its evaluation is reported."""
        request = (
            parameter_pb2.FetchRequest(version=version, header_only=header_only, hold_seconds=hold_seconds)
            if version
            else parameter_pb2.FetchRequest(tag=tag, header_only=header_only, hold_seconds=hold_seconds)
        )
        try:
            responses = iter(self._stub.Fetch(request, timeout=timeout))
            header = next(responses).header
            data = b"".join(response.data for response in responses)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        if not header_only and header.sha256 and hashlib.sha256(data).digest() != header.sha256:
            raise UnavailableError(f"version {header.version}: download does not match its sha256; try again")
        return header, data

    def policy(self, tag: str = "latest", version: int = 0, timeout: float = 300) -> Policy:
        """A trained model to act with in a plain game loop (``policy.act(obs)``): the version ``tag``
        points at (``latest``, ``best``, ``solved``, or one of your own), or ``version``;
        ``policy.save(path)`` writes what ``rlrings models pull`` writes."""
        return policy_from(*self.fetch(version=version, tag=tag, timeout=timeout))

    def watch(self, send_current: bool = True) -> Iterator[parameter_pb2.WatchResponse]:
        """Notices of new versions; cancel the returned call to stop."""
        return self._stub.Watch(parameter_pb2.WatchRequest(send_current=send_current))

    def list(self) -> parameter_pb2.ListResponse:
        return self._call(self._stub.List, parameter_pb2.ListRequest(), 30)

    def report_evaluation(
        self, version: int, evaluation_return: float, episodes: int = 0, confirmed: bool = False, solved: bool = False
    ) -> int:
        """Records a version's evaluation (``confirmed``: over the env's solving window; ``solved``: it
        reached the threshold there); returns the version now tagged ``best``."""
        request = parameter_pb2.ReportEvaluationRequest(
            version=version, evaluation_return=evaluation_return, episodes=episodes, confirmed=confirmed, solved=solved
        )
        return self._call(self._stub.ReportEvaluation, request, 30).best_version

    def delete_tag(self, tag: str) -> int:
        """Removes a named tag; returns the version it pointed at (then retained as any other)."""
        return self._call(self._stub.DeleteTag, parameter_pb2.DeleteTagRequest(tag=tag), 30).version


def policy_from(header: parameter_pb2.WeightsHeader, data: bytes) -> Policy:
    """A Policy from a version's header (its architecture and spaces) and weights."""
    from rlrings.core.models import Policy, build_model, load_weights
    from rlrings.rpc import wire

    spec = wire.model_spec_from_proto(header.model)
    network = build_model(spec)
    load_weights(network, data)
    return Policy(spec, network, header.version)


class WeightsFollower:
    """Keeps the newest published weights at hand, fetched in the background.

    ``latest()`` never blocks on the network: it returns the newest
    ``(header, bytes)`` that has fully arrived, or None before the first.
    Survives parameter-service restarts by watching again. ``header_only``
    follows the versions without their weights (an actor whose policy runs on
    an inference service, waiting for a newer one).
    """

    def __init__(self, client: ParameterClient, header_only: bool = False):
        self._client = client
        self._header_only = header_only
        self._latest: tuple[parameter_pb2.WeightsHeader, bytes] | None = None
        self._arrived = threading.Condition()
        self._stopped = threading.Event()
        self._call = None
        self._thread = threading.Thread(target=self._follow, name="weights-follower", daemon=True)
        self._thread.start()

    def latest(self) -> tuple[parameter_pb2.WeightsHeader, bytes] | None:
        return self._latest

    def wait_first(self, timeout: float) -> tuple[parameter_pb2.WeightsHeader, bytes]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: self._latest is not None, timeout):
                raise UnavailableError(f"no weights published at {self._client.address} within {timeout}s")
            return self._latest

    def wait_newer(self, version: int, stopped: threading.Event | None = None):
        """Waits until a version newer than ``version`` has arrived and returns it; None if this
        follower is closed or ``stopped`` is set first (looked at twice a second)."""
        with self._arrived:
            while self._latest is None or self._latest[0].version <= version:
                if self._stopped.is_set() or (stopped is not None and stopped.is_set()):
                    return None
                self._arrived.wait(0.5)
            return self._latest

    def close(self) -> None:
        self._stopped.set()
        if self._call is not None:
            self._call.cancel()
        self._thread.join(timeout=10)

    def _follow(self) -> None:
        backoff = Backoff(initial=0.1, maximum=2.0)
        while not self._stopped.is_set():
            try:
                self._call = self._client.watch(send_current=True)
                for notice in self._call:
                    backoff.reset()
                    current = self._latest[0].version if self._latest else 0
                    if notice.version <= current:
                        continue
                    header, data = self._client.fetch(version=notice.version, header_only=self._header_only)
                    with self._arrived:
                        self._latest = (header, data)
                        self._arrived.notify_all()
            except grpc.RpcError as error:
                if self._stopped.is_set():
                    return
                log.info("watching weights failed (%s); retrying", error.code())
            except Exception as error:  # a fetch of a pruned version, a restart mid-fetch
                if self._stopped.is_set():
                    return
                log.info("fetching weights failed (%s); retrying", error)
            backoff.wait(self._stopped)

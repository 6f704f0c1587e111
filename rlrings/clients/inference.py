"""The inference service's client: a policy whose forward pass runs on the service's device.

``InferenceClient(address).stream()`` opens one ``Act`` stream. ``send`` queues a batch of
observations and returns at once; ``receive`` gives the answers in the order sent, so a caller
can step one group of envs while another group's observations are at the service. A restarted
service is reconnected to,
and the unanswered requests are sent again (a forward pass changes nothing, so asking twice is safe).

A game server asks for actions the same way (``InferenceClient.act``)::

    with InferenceClient("inference:8005", security=ClientSecurity(token=...)) as client:
        actions = client.act(observations)            # the newest policy's most likely actions
        actions = client.act(observations, tag="solved")
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import numpy as np

from rlrings.core.errors import UnavailableError
from rlrings.rpc import codec
from rlrings.rpc.backoff import Backoff
from rlrings.rpc.client import DEFAULT_MAX_MESSAGE_BYTES, ServiceClient, from_rpc_error
from rlrings.rpc.security import PLAINTEXT, ClientSecurity
from rlrings.v1 import inference_pb2, inference_pb2_grpc

if TYPE_CHECKING:  # (PyTorch is imported only by what needs it: an uploader's client does not)
    from rlrings.core.models import ModelSpec

_RECONNECT = (grpc.StatusCode.UNAVAILABLE,)
"""Codes after which the stream is opened again and the unanswered requests resent."""


@dataclass
class Answer:
    """The network's outputs for one request's observations."""

    policy: np.ndarray
    value: np.ndarray
    version: int
    model: ModelSpec


class InferenceClient(ServiceClient):
    service = "inference"

    def __init__(
        self, address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, security: ClientSecurity = PLAINTEXT
    ):
        super().__init__(address, max_message_bytes, security)
        self._stub = inference_pb2_grpc.InferenceServiceStub(self._channel)

    def stream(self, tag: str = "", version: int = 0, reconnect_seconds: float = 60.0) -> ActStream:
        """An ``Act`` stream answered by the newest weights, or those ``tag`` or ``version`` pins;
        a lost connection is retried for ``reconnect_seconds`` before ``receive`` raises."""
        return ActStream(self._stub, tag, version, reconnect_seconds)

    def act(self, observations: np.ndarray, tag: str = "", version: int = 0, greedy: bool = True) -> np.ndarray:
        """Env actions for a batch of observations: the distribution's mode (``greedy``) or a sample."""
        import torch

        from rlrings.core import distributions

        with self.stream(tag, version) as stream:
            stream.send(observations)
            answer = stream.receive()
        dist = answer.model.make_distribution(torch.from_numpy(answer.policy.copy()))
        chosen = dist.mode() if greedy else dist.sample()
        return distributions.to_env_action(answer.model.action_space, chosen)


class ActStream:
    """One ``Act`` stream: requests go out as they are sent, answers come back in order."""

    def __init__(self, stub, tag: str, version: int, reconnect_seconds: float):
        self._stub, self.tag, self.version_pin = stub, tag, version
        self.reconnect_seconds = reconnect_seconds
        self._unanswered: collections.deque[inference_pb2.ActRequest] = collections.deque()
        self._lock = threading.Lock()
        self.model: ModelSpec | None = None
        self.version = 0
        self.reconnects = 0
        self._open()

    def _open(self) -> None:
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        outbox = self._outbox

        def requests():
            while (request := outbox.get()) is not None:
                yield request

        self._call = self._stub.Act(requests())
        self._answers = iter(self._call)
        for request in self._unanswered:  # after a reconnect: asked again, answered in order
            outbox.put(request)

    def send(self, observations: np.ndarray, min_version: int = 0) -> None:
        """Queues ``observations`` ([N, *shape]) for the service; frames go LZ4-compressed.
        ``min_version``: answered by that version or a newer one (the service waits for it)."""
        observations = np.ascontiguousarray(observations)
        image = observations.dtype == np.uint8 and observations.ndim >= 4
        request = inference_pb2.ActRequest(
            observations=codec.encode(observations, codec.Compression.COMPRESSION_LZ4 if image else 0),
            tag=self.tag,
            version=self.version_pin,
            min_version=min_version,
        )
        with self._lock:
            self._unanswered.append(request)
            self._outbox.put(request)

    def receive(self) -> Answer:
        """The answer to the oldest request not yet received.

        Raises:
            RlringsError: what the service refused the request with (INVALID_ARGUMENT naming the
                field, NOT_FOUND for an unknown tag), or UNAVAILABLE once reconnecting has failed
                for ``reconnect_seconds``.
        """
        backoff = Backoff(initial=0.05, maximum=2.0)
        deadline = None
        while True:
            try:
                response = next(self._answers)
                break
            except StopIteration:
                raise UnavailableError("inference: the service ended the stream") from None
            except grpc.RpcError as error:
                if error.code() not in _RECONNECT:
                    raise from_rpc_error(error) from None
                deadline = deadline or time.monotonic() + self.reconnect_seconds
                if time.monotonic() >= deadline:
                    raise from_rpc_error(error) from None
                backoff.wait()
                with self._lock:
                    self._outbox.put(None)
                    self.reconnects += 1
                    self._open()
        with self._lock:
            self._unanswered.popleft()
        if response.HasField("model"):
            from rlrings.rpc import wire

            self.model = wire.model_spec_from_proto(response.model)
        self.version = response.version
        return Answer(codec.decode(response.policy, "policy"), codec.decode(response.value, "value"),
                      response.version, self.model)  # fmt: skip

    def close(self) -> None:
        self._outbox.put(None)
        self._call.cancel()

    def __enter__(self) -> ActStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

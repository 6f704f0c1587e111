"""The Act stream: checks each request, hands it to the batcher and answers in order.

A reader task takes a stream's requests as they come and submits each at once, so a caller's
second request (an actor's other env group) joins a pass while the first is answered; at most
``max_in_flight`` of a stream's requests wait for their answers, past which the reader stops
reading and gRPC's flow control holds the caller.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np

from rlrings.core.errors import InvalidArgumentError, UnavailableError
from rlrings.rpc import codec
from rlrings.rpc.security import current_caller
from rlrings.rpc.server import blocking
from rlrings.services.inference.batcher import Batcher, Models, Served
from rlrings.v1 import inference_pb2, inference_pb2_grpc


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self, models: Models, batcher: Batcher, max_observations: int, max_in_flight: int, max_version_wait: float
    ):
        self.models, self.batcher = models, batcher
        self.max_observations, self.max_in_flight = max_observations, max_in_flight
        self.max_version_wait = max_version_wait

    async def Act(self, request_iterator, context):
        caller = current_caller()  # (a game server's token: its observations are charged to its act rate)
        answers: asyncio.Queue = asyncio.Queue()
        room = asyncio.Semaphore(self.max_in_flight)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    await room.acquire()
                    if caller is not None:
                        caller.charge_act(max(1, request.observations.shape[0] if request.observations.shape else 1))
                    answers.put_nowait(asyncio.ensure_future(self._answer(request)))
            finally:
                answers.put_nowait(None)

        reader = asyncio.ensure_future(read())
        sent_model = None
        try:
            while (pending := await answers.get()) is not None:
                policy, value, version, proto = await pending
                room.release()
                response = inference_pb2.ActResponse(
                    policy=codec.encode(policy), value=codec.encode(value), version=version
                )
                if proto is not sent_model:
                    response.model.CopyFrom(proto)
                    sent_model = proto
                yield response
            await reader  # a failed read (the client's error) surfaces here
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            while not answers.empty():  # answers nobody will read
                pending = answers.get_nowait()
                if pending is not None:
                    pending.cancel()

    async def _answer(self, request: inference_pb2.ActRequest) -> tuple[np.ndarray, np.ndarray, int, object]:
        if request.version < 0:
            raise InvalidArgumentError(f"version: must be >= 0, got {request.version}")
        if request.min_version < 0:
            raise InvalidArgumentError(f"min_version: must be >= 0, got {request.min_version}")
        if request.min_version and (request.tag or request.version):
            raise InvalidArgumentError(
                "min_version: asks for the newest weights; a request pinning a tag or version has none"
            )
        if request.min_version:
            await self._arrival(request.min_version)
        served = await blocking(self.models.pinned, request.tag, request.version) if (
            request.tag or request.version
        ) else self.models.newest()  # fmt: skip
        observations = self._observations(request.observations, served)
        return await asyncio.wrap_future(self.batcher.submit(observations, served))

    async def _arrival(self, version: int) -> None:
        """Waits (without a thread) until ``version`` or a newer one has arrived here; the batcher
        swaps the newest in before its next pass."""
        deadline = asyncio.get_running_loop().time() + self.max_version_wait
        while (latest := self.models.follower.latest()) is None or latest[0].version < version:
            if asyncio.get_running_loop().time() >= deadline:
                newest = latest[0].version if latest else 0
                raise UnavailableError(
                    f"min_version: version {version} has not arrived within {self.max_version_wait:g}s "
                    f"(max_version_wait_seconds); the newest here is {newest}"
                )
            await asyncio.sleep(0.002)

    def _observations(self, tensor, served: Served) -> np.ndarray:
        """The request's observations, checked against the model before anything is decompressed."""
        space = served.spec.observation_space
        expected_shape, expected_dtype = tuple(space.shape), np.dtype(space.dtype)
        shape = tuple(tensor.shape)
        if len(shape) != len(expected_shape) + 1 or shape[1:] != expected_shape:
            raise InvalidArgumentError(
                f"observations.shape: expected [N, {', '.join(map(str, expected_shape))}] for "
                f"{served.spec.env_id or 'the model'}, got {list(shape)}"
            )
        if not 1 <= shape[0] <= self.max_observations:
            raise InvalidArgumentError(
                f"observations.shape: N must be from 1 to {self.max_observations} (this server's "
                f"max_observations_per_request), got {shape[0]}"
            )
        dtype = codec.numpy_dtype(tensor.dtype, "observations.dtype")
        if dtype != expected_dtype:
            raise InvalidArgumentError(f"observations.dtype: expected {expected_dtype.name}, got {dtype.name}")
        observations = codec.decode(tensor, "observations")
        if observations.dtype.kind == "f" and not np.isfinite(observations).all():
            raise InvalidArgumentError("observations: NaN or infinity in float observations")
        return observations

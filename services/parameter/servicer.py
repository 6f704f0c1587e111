"""gRPC face of the parameter service."""

from __future__ import annotations

import asyncio
import math

from rlrings.core.errors import InvalidArgumentError, ResourceExhaustedError
from rlrings.rpc.server import blocking
from rlrings.services.parameter.store import WeightStore
from rlrings.v1 import parameter_pb2, parameter_pb2_grpc


class ParameterServicer(parameter_pb2_grpc.ParameterServiceServicer):
    def __init__(self, store: WeightStore, max_model_bytes: int, piece_bytes: int):
        self.store = store
        self.max_model_bytes = max_model_bytes
        self.piece_bytes = piece_bytes

    async def Publish(self, request_iterator, context):
        requests = request_iterator.__aiter__()
        first = await anext(requests, None)
        if first is None or not first.HasField("header"):
            raise InvalidArgumentError("header: the first Publish message must carry the header")
        header = first.header
        if not header.model.architecture:
            raise InvalidArgumentError(
                "header.model.architecture: empty; say how to rebuild the model (for example 'mlp' or 'cnn')"
            )
        if header.sha256 and len(header.sha256) != 32:
            hexed = " (it looks like the hex of one)" if len(header.sha256) == 64 else ""
            raise InvalidArgumentError(
                f"header.sha256: {len(header.sha256)} bytes{hexed}; send the raw 32-byte digest "
                "(hashlib.sha256(weights).digest()), or leave it empty to skip the check"
            )
        if header.total_bytes > self.max_model_bytes:
            raise ResourceExhaustedError(
                f"header.total_bytes: {header.total_bytes} is above the limit of {self.max_model_bytes}"
            )
        begun = asyncio.ensure_future(blocking(self.store.begin, header))
        try:
            upload = await asyncio.shield(begun)
        except asyncio.CancelledError:  # the publisher left while its file was being opened
            begun.add_done_callback(lambda f: f.cancelled() or f.exception() or f.result().discard())
            raise
        try:  # each piece goes to disk as it arrives: no copy of the model waits in memory
            async for request in requests:
                if not request.HasField("data"):
                    raise InvalidArgumentError("data: only the first message may carry a header")
                if upload.received + len(request.data) > header.total_bytes:
                    raise InvalidArgumentError(f"data: more than header.total_bytes ({header.total_bytes}) bytes sent")
                await blocking(upload.write, request.data)
        except BaseException:  # (here, not on the thread: a cancelled call's queued thread work never runs)
            upload.discard()
            raise
        # once begun, a commit runs to its end (it cleans up after itself) even if the caller goes away
        version = await asyncio.shield(blocking(self.store.commit, upload))
        return parameter_pb2.PublishResponse(version=version)

    def Fetch(self, request, context):
        which = request.WhichOneof("selector")
        header = self.store.header(
            tag=request.tag if which == "tag" else "", version=request.version, hold_seconds=request.hold_seconds
        )
        yield parameter_pb2.FetchResponse(header=header)
        if request.header_only:
            return
        for piece in self.store.pieces(header.version, self.piece_bytes):
            yield parameter_pb2.FetchResponse(data=piece)

    async def Watch(self, request, context):
        """Announces each new version. A watcher holds no thread: it sleeps on an event that the
        store sets after each publish (and at shutdown, which ends the stream UNAVAILABLE)."""
        loop = asyncio.get_running_loop()
        news = asyncio.Event()
        stop_listening = self.store.listen(lambda: loop.call_soon_threadsafe(news.set))
        try:
            last = 0 if request.send_current else self.store.latest_version
            if request.send_current and self.store.latest_version:
                last = self.store.latest_version - 1
            while True:
                news.clear()  # (before looking: a publish after the look sets it again)
                versions = self.store.versions_after(last, timeout=0)
                if not versions:
                    await news.wait()
                    continue
                for version in versions:
                    try:
                        header = self.store.header(version)
                    except Exception:  # pruned while we looked
                        continue
                    yield parameter_pb2.WatchResponse(
                        version=version, learner_step=header.learner_step, total_bytes=header.total_bytes
                    )
                    last = version
        finally:
            stop_listening()

    def List(self, request, context):
        return parameter_pb2.ListResponse(versions=self.store.headers(), tags=self.store.tags())

    def ReportEvaluation(self, request, context):
        if not math.isfinite(request.evaluation_return):
            raise InvalidArgumentError(f"evaluation_return: {request.evaluation_return} is not a finite number")
        if request.solved and not request.confirmed:
            raise InvalidArgumentError("solved: only a confirmed evaluation (confirmed: true) can say it solved")
        best, solved = self.store.report_evaluation(
            request.version, request.evaluation_return, request.episodes, request.confirmed, request.solved
        )
        return parameter_pb2.ReportEvaluationResponse(best_version=best, solved_version=solved)

    def DeleteTag(self, request, context):
        return parameter_pb2.DeleteTagResponse(version=self.store.delete_tag(request.tag))

"""gRPC face of the viewer, for programs rather than people."""

from __future__ import annotations

import time

import numpy as np

from rlrings.core.errors import InvalidArgumentError
from rlrings.core.spaces import Discrete
from rlrings.rpc import wire
from rlrings.rpc.security import current_caller
from rlrings.services.viewer.viewer import Frame, Viewer
from rlrings.v1 import spaces_pb2, viewer_pb2, viewer_pb2_grpc


def _frame(frame: Frame) -> viewer_pb2.Frame:
    return viewer_pb2.Frame(
        image=frame.image,
        media_type=frame.media_type,
        step=frame.step,
        reward=frame.reward,
        episode_return=frame.episode_return,
        terminated=frame.terminated,
        truncated=frame.truncated,
        policy_version=frame.policy_version,
    )


class ViewerServicer(viewer_pb2_grpc.ViewerServiceServicer):
    def __init__(self, viewer: Viewer):
        self.viewer = viewer

    def ListEnvironments(self, request, context):
        return viewer_pb2.ListEnvironmentsResponse(
            environments=[
                viewer_pb2.EnvironmentInfo(
                    env_id=env["env_id"],
                    action_space=spaces_pb2.Space(
                        discrete=spaces_pb2.DiscreteSpace(n=len(env["actions"]), action_names=env["actions"])
                    )
                    if env["discrete"]
                    else wire.space_to_proto(self.viewer.spec.action_space),
                    key_map=env["keys"] if env["discrete"] else {},
                    continuous_keys={} if env["discrete"] else env["keys"],
                )
                for env in self.viewer.environments()
            ]
        )

    def Watch(self, request, context):
        session = self.viewer.open(request.env_id or self.viewer.spec.env_id, "watch", int(request.seed),
                                   _client(context))  # fmt: skip
        try:
            yield _frame(session.first_frame())
            period = 1.0 / self.viewer.config.fps
            while context.is_active():
                started = time.monotonic()
                frame = session.tick()
                yield _frame(frame)
                if frame.terminated or frame.truncated:
                    return
                time.sleep(max(0.0, period - (time.monotonic() - started)))
        finally:
            session.close()

    def Play(self, request_iterator, context):
        requests = iter(request_iterator)
        first = next(requests, None)
        if first is None or not first.HasField("start"):
            raise InvalidArgumentError("start: the first Play message must start an episode")
        session = self.viewer.open(first.start.env_id or self.viewer.spec.env_id, "play", int(first.start.seed),
                                   _client(context))  # fmt: skip
        try:
            yield _frame(session.first_frame())
            for request in requests:
                session.command(_action(self.viewer.spec.action_space, request))
                yield _frame(session.tick())
        finally:
            session.close()

    def ListDemonstrations(self, request, context):
        return viewer_pb2.ListDemonstrationsResponse(
            demonstrations=[
                viewer_pb2.Demonstration(
                    episode_id=d.episode_id,
                    env_id=d.env_id,
                    steps=d.steps,
                    episode_return=d.episode_return,
                    truncated=d.truncated,
                )
                for d in self.viewer.demonstrations
            ]
        )


def _action(space, request) -> int | np.ndarray:
    """The action a Play message carries, checked against the env's action space."""
    if isinstance(space, Discrete):
        if not request.HasField("action"):
            raise InvalidArgumentError("action: every message after the first carries an action")
        if not 0 <= request.action < space.n:
            raise InvalidArgumentError(f"action: {request.action} is outside [0, {space.n - 1}]")
        return int(request.action)
    if not request.HasField("continuous_action"):
        raise InvalidArgumentError(
            f"continuous_action: every message after the first carries one ({space.describe()} actions)"
        )
    values = np.asarray(request.continuous_action.values, np.float32)
    if values.size != space.size:
        raise InvalidArgumentError(f"continuous_action.values: {values.size} values, the env takes {space.size}")
    if not np.isfinite(values).all():
        raise InvalidArgumentError(f"continuous_action.values: non-finite value in {values.tolist()}")
    low, high = space.low_array().ravel(), space.high_array().ravel()
    outside = np.flatnonzero((values < low) | (values > high))
    if outside.size:
        i = int(outside[0])
        raise InvalidArgumentError(f"continuous_action.values[{i}]: {values[i]:g} is outside [{low[i]:g}, {high[i]:g}]")
    return values.reshape(space.shape)


def _client(context) -> str:
    """Who calls, for the per-client session limit: the token's name, else the peer's address."""
    caller = current_caller()
    if caller is not None:
        return caller.name
    peer = context.peer()  # ipv4:127.0.0.1:5555, ipv6:[::1]:5555
    return peer.rsplit(":", 1)[0]

"""Conversions between rlrings' own types and their protobuf messages, in one place.

The RL core (spaces, distributions, models, algorithms) knows nothing of
gRPC or protobuf; services and clients convert at the edge with these.
"""

from __future__ import annotations

import json

from rlrings.core.models import ModelSpec
from rlrings.core.spaces import Box, Discrete, Space
from rlrings.rpc import codec
from rlrings.v1 import spaces_pb2


def space_to_proto(space: Space) -> spaces_pb2.Space:
    if isinstance(space, Discrete):
        return spaces_pb2.Space(discrete=spaces_pb2.DiscreteSpace(n=space.n, action_names=space.names))
    return spaces_pb2.Space(
        box=spaces_pb2.BoxSpace(
            dtype=codec.dtype_code(space.dtype), shape=space.shape, low=list(space.low), high=list(space.high)
        )
    )


def space_from_proto(proto: spaces_pb2.Space, field: str = "space") -> Space:
    """Raises ValueError naming ``field`` for a space that is neither Discrete nor Box."""
    kind = proto.WhichOneof("kind")
    if kind == "discrete":
        return Discrete(int(proto.discrete.n), tuple(proto.discrete.action_names))
    if kind == "box":
        box = proto.box
        return Box(
            tuple(box.shape), codec.numpy_dtype(box.dtype, f"{field}.box.dtype"), tuple(box.low), tuple(box.high)
        )
    raise ValueError(f"{field}: neither a box nor a discrete space")


def model_spec_to_proto(spec: ModelSpec) -> spaces_pb2.ModelSpec:
    return spaces_pb2.ModelSpec(
        architecture=spec.architecture,
        architecture_args_json=json.dumps(spec.args),
        observation_space=space_to_proto(spec.observation_space),
        action_space=space_to_proto(spec.action_space),
        env_id=spec.env_id,
        algorithm=spec.algorithm,
        distribution=spec.distribution,
    )


def model_spec_from_proto(proto: spaces_pb2.ModelSpec) -> ModelSpec:
    observation = space_from_proto(proto.observation_space, "model.observation_space")
    if not isinstance(observation, Box):
        raise ValueError("model.observation_space: must be a box")
    return ModelSpec(
        architecture=proto.architecture,
        observation_space=observation,
        action_space=space_from_proto(proto.action_space, "model.action_space"),
        distribution=proto.distribution,
        args=json.loads(proto.architecture_args_json or "{}"),
        env_id=proto.env_id,
        algorithm=proto.algorithm,
    )

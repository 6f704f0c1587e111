"""Clients of the mesh for game servers, tools and the services themselves: replay (write experience,
sample it), parameter (publish, fetch and follow weights) and inference (ask for the policy's actions)."""

from rlrings.clients.inference import InferenceClient
from rlrings.clients.parameter import ParameterClient, WeightsFollower
from rlrings.clients.replay import ReplayClient, Writer

__all__ = ["InferenceClient", "ParameterClient", "ReplayClient", "WeightsFollower", "Writer"]

"""Clients of the mesh for game servers, tools and the services themselves: replay (write experience,
sample it) and parameter (publish, fetch and follow weights)."""

from rlrings.clients.parameter import ParameterClient, WeightsFollower
from rlrings.clients.replay import ReplayClient, Writer

__all__ = ["ParameterClient", "ReplayClient", "WeightsFollower", "Writer"]

"""gRPC face of the actor: status and control."""

from __future__ import annotations

import json

import numpy as np

from rlrings.algorithms.api import live_settings
from rlrings.rpc.control import run_state, update_settings
from rlrings.services.actor.actor import Actor
from rlrings.v1 import actor_pb2, actor_pb2_grpc


class ActorServicer(actor_pb2_grpc.ActorServiceServicer):
    def __init__(self, actor: Actor):
        self.actor = actor

    def _state(self) -> int:
        return run_state(self.actor.stopped, self.actor.paused, self.actor.writer is not None)

    def GetStatus(self, request, context):
        actor = self.actor
        episodes = list(actor.episodes)
        recent = episodes[-100:]
        return actor_pb2.GetActorStatusResponse(
            state=self._state(),
            env_id=actor.config.env,
            num_envs=actor.config.num_envs,
            env_steps=actor.env_steps,
            steps_per_second=actor.steps_per_second(),
            episodes=actor.episode_count,
            mean_episode_return=float(np.mean([e.episode_return for e in recent])) if recent else 0.0,
            mean_episode_length=float(np.mean([e.length for e in recent])) if recent else 0.0,
            policy_version=actor.policy_version,
            buffered_chunks=actor.writer.pending if actor.writer else 0,
            recent_episodes=[
                actor_pb2.EpisodeRecord(
                    index=e.index,
                    episode_return=e.episode_return,
                    length=e.length,
                    policy_version=e.policy_version,
                    end_time=e.end_time,
                    achievements=e.achievements,
                )
                for e in episodes
                if e.index > request.episodes_after
            ],
        )

    def Pause(self, request, context):
        self.actor.paused.set()
        return actor_pb2.PauseActorResponse(state=self._state())

    def Resume(self, request, context):
        self.actor.paused.clear()
        return actor_pb2.ResumeActorResponse(state=self._state())

    def UpdateConfig(self, request, context):
        algorithm = self.actor.config.algorithm  # the acting half reads its settings from it
        current = update_settings(request.settings, [(algorithm, live_settings(type(algorithm), "actor"))])
        return actor_pb2.UpdateActorConfigResponse(settings={k: json.dumps(v) for k, v in current.items()})

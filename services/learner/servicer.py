"""gRPC face of the learner: status and control."""

from __future__ import annotations

import json

from rlrings.algorithms.api import live_settings
from rlrings.rpc.control import run_state, update_settings
from rlrings.services.learner.learner import Learner
from rlrings.v1 import learner_pb2, learner_pb2_grpc

# Settings that may change while the learner runs: type, lowest, highest.


class LearnerServicer(learner_pb2_grpc.LearnerServiceServicer):
    def __init__(self, learner: Learner):
        self.learner = learner

    def _state(self) -> int:
        return run_state(self.learner.stopped, self.learner.paused, self.learner.running)

    def GetStatus(self, request, context):
        learner = self.learner
        return learner_pb2.GetLearnerStatusResponse(
            state=self._state(),
            rank=learner.ring.rank,
            world_size=learner.ring.size,
            algorithm=learner.config.algorithm.name,
            learner_step=learner.step,
            steps_per_second=learner.steps_per_second(),
            published_version=learner.published_version,
            policy_lag=learner.policy_lag,
            policy_lag_updates=learner.policy_lag_updates,
            policy_lag_seconds=learner.policy_lag_seconds,
            losses=learner.losses,
            replay_wait_seconds=learner.replay_wait_seconds,
            device_busy_share=learner.device_clock.busy_share(),
        )

    def Pause(self, request, context):
        self.learner.paused.set()
        return learner_pb2.PauseLearnerResponse(state=self._state())

    def Resume(self, request, context):
        self.learner.paused.clear()
        return learner_pb2.ResumeLearnerResponse(state=self._state())

    def UpdateConfig(self, request, context):
        config = self.learner.config
        algorithm = config.algorithm  # the learning half reads its settings from it
        targets = [
            (config, live_settings(type(config), "learner")),
            (algorithm, live_settings(type(algorithm), "learner")),
        ]
        current = update_settings(request.settings, targets)
        return learner_pb2.UpdateLearnerConfigResponse(settings={k: json.dumps(v) for k, v in current.items()})

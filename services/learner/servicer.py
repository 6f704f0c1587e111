"""gRPC face of the learner: status and control."""

from __future__ import annotations

import json

from rlrings.errors import InvalidArgumentError
from rlrings.v1 import control_pb2, learner_pb2, learner_pb2_grpc
from services.learner.learner import Learner

_MUTABLE = {"learning_rate": float, "publish_every": int, "entropy_cost": float}


class LearnerServicer(learner_pb2_grpc.LearnerServiceServicer):
    def __init__(self, learner: Learner):
        self.learner = learner

    def _state(self) -> int:
        if self.learner.stopped.is_set():
            return control_pb2.RUN_STATE_STOPPING
        if self.learner.paused.is_set():
            return control_pb2.RUN_STATE_PAUSED
        return control_pb2.RUN_STATE_RUNNING if self.learner.running else control_pb2.RUN_STATE_STARTING

    def GetStatus(self, request, context):
        learner = self.learner
        return learner_pb2.GetLearnerStatusResponse(
            state=self._state(),
            rank=0,
            world_size=1,
            algorithm=learner.config.algorithm,
            learner_step=learner.step,
            steps_per_second=learner.steps_per_second(),
            published_version=learner.published_version,
            policy_lag=learner.policy_lag,
            losses=learner.losses,
            replay_wait_seconds=learner.replay_wait_seconds,
        )

    def Pause(self, request, context):
        self.learner.paused.set()
        return learner_pb2.PauseLearnerResponse(state=self._state())

    def Resume(self, request, context):
        self.learner.paused.clear()
        return learner_pb2.ResumeLearnerResponse(state=self._state())

    def UpdateConfig(self, request, context):
        for name, raw in request.settings.items():
            if name not in _MUTABLE:
                raise InvalidArgumentError(
                    f"settings[{name!r}]: cannot change while running; changeable: {sorted(_MUTABLE)}"
                )
            try:
                value = _MUTABLE[name](json.loads(raw))
            except (ValueError, TypeError):
                raise InvalidArgumentError(f"settings[{name!r}]: {raw!r} is not a JSON number") from None
            if value <= 0 and name != "entropy_cost" or value < 0:
                raise InvalidArgumentError(f"settings[{name!r}]: {value} is out of range")
            setattr(self.learner.config, name, value)
            if name == "learning_rate":
                for group in self.learner.algorithm.optimizer.param_groups:
                    group["lr"] = value
            if name == "entropy_cost" and hasattr(self.learner.algorithm.config, "entropy_cost"):
                self.learner.algorithm.config.entropy_cost = value
        current = {
            "learning_rate": self.learner.algorithm.optimizer.param_groups[0]["lr"],
            "publish_every": self.learner.config.publish_every,
            "entropy_cost": self.learner.config.entropy_cost,
        }
        return learner_pb2.UpdateLearnerConfigResponse(settings={k: json.dumps(v) for k, v in current.items()})

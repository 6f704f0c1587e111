"""The evaluator against a real parameter service: each round reports how far the learner had
moved past the version it played, in versions and seconds."""

import threading
import time

import pytest

from rlrings.clients.parameter import ParameterClient
from rlrings.core.models import ModelSpec, build_model, weights_to_bytes
from rlrings.envs import env_spec
from rlrings.mesh.evaluation import Evaluator
from rlrings.rpc import wire

pytestmark = pytest.mark.service


def test_each_round_reports_the_versions_published_while_it_played_and_the_versions_age(start_parameter):
    server = start_parameter()
    spec = ModelSpec.for_env(env_spec("CartPole-v1"), "appo")
    model, proto = build_model(spec), wire.model_spec_to_proto(spec)
    results, done = [], threading.Event()
    with ParameterClient(server.address).wait_ready(10) as client:
        client.publish(weights_to_bytes(model), proto, learner_step=1)
        time.sleep(0.5)  # the version is this old, at least, when its round ends

        def context():  # the round has fetched version 1: the learner publishes three more meanwhile
            if not results:
                for step in (2, 3, 4):
                    client.publish(weights_to_bytes(model), proto, learner_step=step)
            return 0.0, 0

        def on_result(result, confirmation, solved):
            results.append(result)
            done.set()

        evaluator = Evaluator("CartPole-v1", ParameterClient(server.address), context, on_result, episodes=4,
                              interval_seconds=60).start()  # fmt: skip
        try:
            assert done.wait(60)
        finally:
            evaluator.stop()
    first = results[0]
    assert first.version == 1 and len(first.greedy_returns) == 4 and len(first.sampled_returns) == 4
    assert first.versions_behind == 3
    assert 0.5 <= first.seconds_behind < 30
    assert first.record()["versions_behind"] == 3


def test_rounds_play_below_trainings_priority_and_a_confirmation_at_it(start_parameter, monkeypatch):
    import os

    from rlrings.mesh import evaluation

    real, niceness = evaluation.play_modes, []

    def play_and_note_priority(*args, **kwargs):  # the real games, and the priority they were played at
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "play_modes", play_and_note_priority)
    server = start_parameter()
    spec = ModelSpec.for_env(env_spec("CartPole-v1"), "appo")
    done, before = threading.Event(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with ParameterClient(server.address).wait_ready(10) as client:
        client.publish(weights_to_bytes(build_model(spec)), wire.model_spec_to_proto(spec), learner_step=1)
        evaluator = Evaluator("CartPole-v1", ParameterClient(server.address), lambda: (0.0, 0),
                              lambda result, confirmation, solved: done.set(), episodes=2, confirm_episodes=2,
                              target=1.0, interval_seconds=60, niceness=5).start()  # fmt: skip
        try:
            assert done.wait(60)
        finally:
            evaluator.stop()
    assert niceness == [before + 5, before], "the round niced, its confirmation (every episode reaches 1) not"

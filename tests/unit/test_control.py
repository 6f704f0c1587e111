import os
import subprocess
import sys
import textwrap
import threading

import pytest

from rlrings.core.errors import InvalidArgumentError
from rlrings.ops.processes import NICENESS_ENV
from rlrings.rpc.control import run_state, update_settings
from rlrings.v1 import control_pb2


def models():
    from rlrings.algorithms.dqn import DqnConfig
    from rlrings.services.learner.config import LearnerConfig

    return DqnConfig(), LearnerConfig(algorithm="dqn")


def test_live_settings_are_marked_on_the_configs_and_validated_by_them():
    from rlrings.algorithms.api import live_settings

    dqn, learner = models()
    assert live_settings(type(dqn), "actor") == ("epsilon",) and live_settings(type(dqn), "learner") == (
        "learning_rate",
    )
    assert live_settings(type(learner), "learner") == ("publish_every",)
    current = update_settings(
        {"epsilon": "0.25", "publish_every": "7"}, [(dqn, ["epsilon"]), (learner, ["publish_every"])]
    )
    assert current == {"epsilon": 0.25, "publish_every": 7} and (dqn.epsilon, learner.publish_every) == (0.25, 7)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"gamma": "0.9"}, r"settings\['gamma'\]: cannot change while running; changeable: \['epsilon', 'publish_"),
        ({"epsilon": "lots"}, r"settings\['epsilon'\]: 'lots' is not JSON"),
        ({"epsilon": "1.5"}, r"settings\['epsilon'\]: 1.5 is refused: Input should be less than or equal to 1"),
        ({"epsilon": "0.5", "publish_every": "0"}, r"'publish_every'\]: 0 is refused: Input should be greater"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_setting_and_change_nothing(settings, message):
    dqn, learner = models()
    with pytest.raises(InvalidArgumentError, match=message):
        update_settings(settings, [(dqn, ["epsilon"]), (learner, ["publish_every"])])
    assert (dqn.epsilon, learner.publish_every) == (0.05, 5), "nothing was applied"


def test_run_state():
    stopped, paused = threading.Event(), threading.Event()
    assert run_state(stopped, paused, running=False) == control_pb2.RUN_STATE_STARTING
    assert run_state(stopped, paused, running=True) == control_pb2.RUN_STATE_RUNNING
    paused.set()
    assert run_state(stopped, paused, running=True) == control_pb2.RUN_STATE_PAUSED
    stopped.set()
    assert run_state(stopped, paused, running=True) == control_pb2.RUN_STATE_STOPPING


def test_a_niced_service_yields_on_every_thread_only_once_it_serves(tmp_path):
    """The supervisor's niceness reaches the child through its environment and applies to every thread
    from the call on (Linux nices threads one by one); before that, start-up runs at full priority."""
    script = textwrap.dedent(
        """
        import os, threading
        from rlrings.ops.processes import yield_cpu
        def nice(tid):
            return int(open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()[16])
        started = threading.Event(); done = threading.Event()
        worker = threading.Thread(target=lambda: (started.set(), done.wait())); worker.start(); started.wait()
        before = {nice(t) for t in os.listdir("/proc/self/task")}
        yield_cpu()
        after = {nice(t) for t in os.listdir("/proc/self/task")}
        done.set(); worker.join()
        print(sorted(before), sorted(after))
        """
    )
    base = os.getpriority(os.PRIO_PROCESS, 0)
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, NICENESS_ENV: "5"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("] [")
    assert out[0].strip("[") == str(base) and out[1].strip("]\n") == str(min(19, base + 5))


def test_a_service_killed_from_outside_or_after_a_life_is_always_restarted_one_crash_looping_is_not(tmp_path):
    """The supervisor's rule: five deaths in a row within 30 s of starting, of the service's own
    accord, stop the mesh; SIGKILLs (the OOM killer, an operator, the chaos harness) and deaths
    after a longer life never do, however many (ten kills of replay stopped the mesh at five)."""
    import signal

    from rlrings.mesh.supervisor import CRASH_LOOP_SECONDS, MAX_QUICK_DEATHS, crash_looping
    from rlrings.ops.processes import ServiceProcess

    service = ServiceProcess("replay", "rlrings.services.replay", {}, tmp_path, started_at=100.0)
    assert not any(crash_looping(service, -signal.SIGKILL, 101.0) for _ in range(20))  # killed 20 times
    assert not any(crash_looping(service, 1, 100.0 + CRASH_LOOP_SECONDS) for _ in range(20))  # each after a life
    for death in range(1, MAX_QUICK_DEATHS + 1):  # a failure at start, again and again
        assert crash_looping(service, 1, 103.0) == (death == MAX_QUICK_DEATHS)
    service.quick_deaths = MAX_QUICK_DEATHS - 1
    assert not crash_looping(service, -signal.SIGKILL, 101.0) and service.quick_deaths == 0, "a kill ends a run"

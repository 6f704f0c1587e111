import threading

import pytest

from rlrings.control import parse_settings, run_state
from rlrings.errors import InvalidArgumentError
from rlrings.v1 import control_pb2

ALLOWED = {"epsilon": (float, 0.0, 1.0), "publish_every": (int, 1, 100)}


def test_settings_parse_json_numbers_within_bounds():
    assert parse_settings({"epsilon": "0.25", "publish_every": "7"}, ALLOWED) == {"epsilon": 0.25, "publish_every": 7}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"gamma": "0.9"},
            r"settings\['gamma'\]: cannot change while running; changeable: \['epsilon', 'publish_every'\]",
        ),
        ({"epsilon": "lots"}, r"settings\['epsilon'\]: 'lots' is not a JSON number"),
        ({"epsilon": "1.5"}, r"settings\['epsilon'\]: 1.5 is not in \[0.0, 1.0\]"),
        ({"publish_every": "0"}, r"settings\['publish_every'\]: 0 is not in \[1, 100\]"),
    ],
)
def test_bad_settings_name_the_setting(settings, message):
    with pytest.raises(InvalidArgumentError, match=message):
        parse_settings(settings, ALLOWED)


def test_run_state():
    stopped, paused = threading.Event(), threading.Event()
    assert run_state(stopped, paused, running=False) == control_pb2.RUN_STATE_STARTING
    assert run_state(stopped, paused, running=True) == control_pb2.RUN_STATE_RUNNING
    paused.set()
    assert run_state(stopped, paused, running=True) == control_pb2.RUN_STATE_PAUSED
    stopped.set()
    assert run_state(stopped, paused, running=True) == control_pb2.RUN_STATE_STOPPING

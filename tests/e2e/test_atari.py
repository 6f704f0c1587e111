"""Atari end to end: the mesh trains on Breakout's preprocessed frames and reports raw game
scores and frames; replay refuses raw screens where the table holds preprocessed stacks."""

import numpy as np
import pytest

from rlrings import algorithms
from rlrings.algorithms.impala import ImpalaConfig
from rlrings.clients.replay import ReplayClient
from rlrings.core import experience
from rlrings.core.errors import InvalidArgumentError
from rlrings.envs import env_spec
from tests.e2e.helpers import finish, up

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_breakout_trains_through_the_mesh_and_reports_raw_scores_and_frames(tmp_path):
    """A few thousand steps (4 frames each): too few to learn Breakout, enough for whole games
    (a random player's lasts about 200 steps) and updates on the Nature CNN."""
    flags = ["--env", "ALE/Breakout-v5", "--actors", "1", "--envs-per-actor", "4", "--max-env-steps", "6000",
             "--max-seconds", "200", "--eval-episodes", "2", "--no-viewer"]  # fmt: skip
    summary, output = finish(up(tmp_path, *flags), tmp_path)
    assert summary["learner_steps"] > 0 and summary["frame_skip"] == 4, summary
    assert summary["env_frames"] == 4 * summary["env_steps"] and summary["env_frames_per_second"] > 0
    assert summary["episodes"] >= 4, "whole games ended (lost lives end training episodes, not games)"
    score = summary["mean_return_last_window"]
    assert 0 <= score < 50 and score == pytest.approx(round(score * summary["episodes"]) / summary["episodes"])
    games = summary["training_episodes"]  # the learning curve's points: (env steps then, raw score)
    assert len(games) == summary["episodes"] and all(0 <= ret < 50 for _, ret in games)
    assert 0 < games[-1][0] <= summary["env_steps"]
    assert summary["evaluations"] and all(e["greedy_mean"] >= 0 for e in summary["evaluations"]), summary
    assert f"with {algorithms.DEFAULT}," in output and "ALE/Breakout-v5" in output
    table = experience.table_config(ImpalaConfig(), env_spec("ALE/Breakout-v5"))
    assert table["signature"]["obs"] == {"dtype": "uint8", "shape": [84, 84, 4]}


def test_raw_screens_are_refused_naming_the_column_and_both_shapes(start_replay):
    spec = env_spec("ALE/Pong-v5")
    server = start_replay([experience.table_config(ImpalaConfig(queue_size=64), spec)])
    steps = 21
    columns = {
        "obs": np.zeros((steps, 210, 160, 3), np.uint8),  # the emulator's screen, not the preprocessed stack
        "action": np.zeros(steps, np.int32),
        "reward": np.zeros(steps, np.float32),
        "terminated": np.zeros(steps, bool),
        "truncated": np.zeros(steps, bool),
        "logp": np.zeros(steps, np.float32),
        "final_obs": np.zeros((steps, 84, 84, 4), np.uint8),
    }
    with ReplayClient(server.address) as client:
        with pytest.raises(InvalidArgumentError, match=r"obs.*got \[21, 210, 160, 3\].*wants \[.*84, 84, 4\]"):
            client.insert("experience", columns, timeout=10)
        columns["obs"] = np.zeros((steps, 84, 84, 4), np.float32)
        with pytest.raises(InvalidArgumentError, match=r"obs.*(float32|dtype).*uint8"):
            client.insert("experience", columns, timeout=10)

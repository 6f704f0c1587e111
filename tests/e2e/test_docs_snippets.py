"""The shell sessions of the front page and the docs, run line by line as written in a fresh
directory, bounded where a line would train for minutes: the two commands, the researcher's
train-pull-render session and its game loop, the mesh's example commands and the learner ring."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, run_shell_snippet, snippet

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def summaries(run_dir) -> list[dict]:
    """The summaries of the runs under ``runs/``, oldest first (``runs/latest`` is a link to the newest)."""
    runs = sorted(path for path in (run_dir / "runs").iterdir() if path.name != "latest")
    return [json.loads((path / "summary.json").read_text()) for path in runs]


def test_the_two_commands(tmp_path):
    """``make run`` as the front page gives it, with a short budget (``make test`` is this suite)."""
    run, test = snippet("two-commands").splitlines()
    assert run.split("#")[0].split() == ["make", "run"] and test.split("#")[0].split() == ["make", "test"]
    result = subprocess.run(
        ["make", "run", f"ARGS=--max-seconds 20 --target-return 1e9 --run-dir {tmp_path}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["reason"] == "time limit reached" and summary["learner_steps"] > 0


@pytest.mark.timeout(600)
def test_the_researchers_session_trains_pulls_renders_and_plays(tmp_path):
    """Train until solved (bounded at 280 s, as the default run's test), list, pull the version that
    solved, render it, and play it with the front page's game loop: the model played is the one the
    run reported."""
    result = run_shell_snippet("researcher-shell", tmp_path, env={"RLRINGS_UP_MAX_SECONDS": "280"}, timeout=500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (summary,) = summaries(tmp_path)
    assert summary["solved"], summary
    assert (tmp_path / "runs" / "latest" / "summary.json").exists()
    solved = summary["solved_version"]
    assert f"version {solved} " in result.stdout and "solved" in result.stdout  # the listing and the pull
    assert (tmp_path / "model.pt").stat().st_size > 1_000 and (tmp_path / "agent.gif").stat().st_size > 1_000
    (tmp_path / "play.py").write_text(snippet("play-pulled-model"))
    played = subprocess.run([sys.executable, "play.py"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert played.returncode == 0, played.stderr[-2000:]
    mean = float(played.stdout.split("mean return ")[1].split()[0])
    assert played.stdout.startswith(f"version {solved}: ") and mean >= 400, played.stdout


@pytest.mark.timeout(600)
def test_the_mesh_pages_commands(tmp_path):
    """Crafter with the CNN, DQN, the config file the page shows and the help, each run bounded at 20 s."""
    (tmp_path / "mesh.yaml").write_text(snippet("mesh-config"))
    result = run_shell_snippet("mesh-commands", tmp_path, env={"RLRINGS_UP_MAX_SECONDS": "20"},
                               substitute={"--max-seconds 300": "--max-seconds 20"}, timeout=500)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    crafter, dqn, from_file = summaries(tmp_path)
    assert crafter["env"] == "crafter" and crafter["reason"] == "time limit reached"
    assert dqn["algorithm"] == "dqn" and dqn["learner_steps"] > 0
    assert (from_file["env"], from_file["algorithm"]) == ("LunarLander-v3", "ppo") and from_file["seconds"] < 60
    assert "--envs-per-actor" in result.stdout and "every setting" not in result.stderr  # the help was printed


@pytest.mark.timeout(600)
def test_the_learner_ring_commands(tmp_path):
    """Horovod's build (cached: make test has built it) and a ring of two ranks on each backend."""
    try:
        import horovod.torch  # noqa: F401
    except ImportError:
        if os.environ.get("RLRINGS_REQUIRE_HOROVOD") != "1":
            pytest.skip("Horovod is not installed (make horovod builds it; make test requires it)")
    result = run_shell_snippet("learner-ring", tmp_path, env={"RLRINGS_UP_MAX_SECONDS": "40"}, timeout=500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    horovod, torch_ring = summaries(tmp_path)
    for summary in (horovod, torch_ring):
        assert summary["learners"] == 2 and summary["learner_steps"] > 0, summary
    assert (horovod["ring"], torch_ring["ring"]) == ("horovod", "torch")

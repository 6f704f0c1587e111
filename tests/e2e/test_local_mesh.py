"""``rlrings up`` as a new user runs it."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def rlrings(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "rlrings.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        **kwargs,
    )


def test_up_runs_writes_samples_and_stops_cleanly(tmp_path):
    process = rlrings("up", "--seconds", "6", "--run-dir", str(tmp_path))
    output = process.communicate(timeout=180)[0]
    assert process.returncode == 0, output
    assert "local mesh summary" in output
    inserted = int(output.split("inserted items")[-1].split("(")[0].strip(" │").replace(",", ""))
    assert inserted > 1000
    assert (tmp_path / "replay" / "snapshot" / "demo" / "meta.json").exists()
    assert "replay stopped" in (tmp_path / "replay.log").read_text()


def test_ctrl_c_stops_every_process(tmp_path):
    process = rlrings("up", "--seconds", "120", "--run-dir", str(tmp_path), start_new_session=True)
    deadline = time.monotonic() + 60
    children = []
    while time.monotonic() < deadline and not children:
        children = psutil.Process(process.pid).children(recursive=True)
        time.sleep(0.2)
    assert children, "the replay service runs as a child process"
    time.sleep(3)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 130, output
    assert "interrupted" in output
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"orphans left behind: {alive}"

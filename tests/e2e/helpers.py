"""What the end-to-end tests share: running ``rlrings up`` as a user does, and finding its processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil


def up(run_dir, *flags, start_new_session=False):
    return subprocess.Popen(
        [sys.executable, "-m", "rlrings.ops.cli", "up", "--run-dir", str(run_dir), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        start_new_session=start_new_session,
    )


def finish(process, run_dir, timeout=400):
    output = process.communicate(timeout=timeout)[0]
    assert process.returncode == 0, output
    return json.loads((run_dir / "summary.json").read_text()), output


def children_named(pid, module):
    def cmdline(process):
        try:
            return " ".join(process.cmdline())
        except (psutil.ZombieProcess, psutil.NoSuchProcess):  # just killed, not yet reaped by the supervisor
            return ""

    return [p for p in psutil.Process(pid).children(recursive=True) if module in cmdline(p)]

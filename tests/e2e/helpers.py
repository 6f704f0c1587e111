"""What the end-to-end tests share: running ``rlrings up`` as a user does, and finding its processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request

import psutil
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.helpers import TOOLS_BIN


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


def scrape_every_service(
    run_dir, services=("replay", "parameter", "learner", "actor-0", "actor-1", "viewer")
) -> dict[str, str]:
    """Every service's /metrics, each linted as `promtool check metrics` would, with the process's
    own figures on it."""
    promlint = shutil.which("promlint", path=f"{TOOLS_BIN}:{os.environ['PATH']}")
    assert promlint, "promlint is built by make tools (dev/promlint)"
    scrapes = {}
    for path in sorted((run_dir / "configs").glob("*.yaml")):
        port = json.loads(path.read_text())["metrics_port"]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        lint = subprocess.run([promlint], input=text, capture_output=True, text=True, timeout=30)
        assert lint.returncode == 0, f"{path.stem}: {lint.stdout}{lint.stderr}"
        check_conventions(path.stem, text)
        for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                     "process_threads"):  # fmt: skip
            assert f"\n{name} " in text, f"{path.stem} exports no {name}"
        scrapes[path.stem] = text
    assert set(scrapes) == set(services)
    return scrapes


def check_conventions(service: str, text: str) -> None:
    """prometheus_client's own parser reads every family; each histogram has cumulative buckets
    ending at +Inf that equal its _count; counters are _total; nothing is typed unknown."""
    for family in text_string_to_metric_families(text):
        where = f"{service}: {family.name}"
        assert family.type in ("counter", "gauge", "histogram", "summary", "info"), f"{where} is {family.type}"
        if family.type == "histogram":
            series = {}
            for sample in family.samples:
                key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                series.setdefault(key, []).append(sample)
            for key, samples in series.items():
                buckets = [s for s in samples if s.name.endswith("_bucket")]
                counts = [s.value for s in buckets]
                assert buckets and buckets[-1].labels["le"] == "+Inf", f"{where}{key}: no +Inf bucket"
                assert counts == sorted(counts), f"{where}{key}: buckets are not cumulative"
                (count,) = [s.value for s in samples if s.name.endswith("_count")]
                assert count == counts[-1], f"{where}{key}: _count differs from the +Inf bucket"
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), where

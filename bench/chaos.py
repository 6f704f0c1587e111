"""Fault injection: ``kill -9`` each service of a running mesh in turn, and measure.

The mesh (``rlrings up``, supervised by :class:`rlrings.mesh.Mesh`) trains
while this harness, one service at a time: writes probe items to a table of
its own on replay and waits for their acknowledgements (no checkpoint: an
ack is the promise, on either store); kills the service's process
with SIGKILL; and watches. The supervisor restarts what died. For each kill
it reports:

- acknowledged probe items lost (must be 0: the Cassandra store has them at
  QUORUM, the embedded store in its acknowledgement log);
- seconds until the killed service answers health checks again, and until
  training progresses again (the learner's step grows after that);
- learner steps lost (a learner or ring resumes from its last checkpoint);
- whether any other process crashed meanwhile (none may; the ranks of a
  ring restart together by design and are reported as such).

Results: bench/results/chaos.json and chaos.png (the learner's step over
time, with the kills marked).

    python -m bench.chaos [--learners 2] [--cassandra 127.0.0.1,127.0.0.2,127.0.0.3] [--settle 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from rlrings.clients.replay import ReplayClient
from rlrings.core.errors import RlringsError
from rlrings.mesh import Mesh, MeshConfig
from rlrings.mesh.plan import effective
from rlrings.v1 import learner_pb2, learner_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PROBE = "chaos_probe"
PROBE_TABLE = {
    "name": PROBE,
    "signature": {"n": {"dtype": "int64", "shape": []}},
    "max_size": 1_000_000,
    "selector": "uniform",
}


@dataclass
class KillReport:
    service: str
    probe_items_acknowledged: int
    probe_items_lost: int
    seconds_until_back: float | None
    seconds_until_training_progresses: float | None
    learner_step_at_kill: int
    learner_steps_lost: int
    other_restarts: list[str] = field(default_factory=list)
    """Restarts of other processes while this one was down (a crash, unless it is a ring peer)."""
    ring_peers_restarted: bool = False


class Chaos:
    def __init__(self, config: MeshConfig, console: Console):
        self.console = console
        self.mesh = Mesh(config)
        replay = self.mesh.service("replay")  # the tables the mesh plans, and a probe table beside them
        replay.config["tables"] = [t.model_dump(mode="json") for t in effective(replay).tables] + [PROBE_TABLE]
        self.steps: list[tuple[float, int]] = []  # (seconds since start, learner step)
        self.kills: list[tuple[float, str]] = []
        self._start = time.monotonic()
        self._probe_sent = 0
        self._lock = threading.Lock()

    # -- observing -------------------------------------------------------------

    def learner_step(self) -> int | None:
        rank0 = self.mesh.learners[0]
        try:
            with grpc.insecure_channel(rank0.address) as channel:
                status = learner_pb2_grpc.LearnerServiceStub(channel).GetStatus(
                    learner_pb2.GetLearnerStatusRequest(), timeout=1
                )
        except grpc.RpcError:
            return None
        with self._lock:
            self.steps.append((time.monotonic() - self._start, status.learner_step))
        return status.learner_step

    @staticmethod
    def serving(address: str) -> bool:
        try:
            with grpc.insecure_channel(address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def wait_for(self, condition, timeout: float, every: float = 0.2) -> float | None:
        begin = time.monotonic()
        while time.monotonic() - begin < timeout:
            if condition():
                return time.monotonic() - begin
            time.sleep(every)
        return None

    # -- probe items -------------------------------------------------------------

    def probe_write(self, count: int = 64) -> int:
        """Inserts ``count`` numbered items into the probe table; returns how many are acknowledged in all."""
        with ReplayClient(self.mesh.service("replay").address).wait_ready(60) as client:
            for start in range(self._probe_sent, self._probe_sent + count, 16):
                client.insert(PROBE, {"n": np.arange(start, start + 16, dtype=np.int64)})
            self._probe_sent += count
        return self._probe_sent

    def probe_stored(self) -> int:
        with ReplayClient(self.mesh.service("replay").address).wait_ready(60) as client:
            return int(client.info([PROBE])[PROBE].size)

    # -- the run -------------------------------------------------------------------

    def run(self, kills: list[str], settle: float, timeout: float) -> list[KillReport]:
        quiet = Console(file=open(os.devnull, "w"))  # noqa: SIM115 - the mesh's live view, unseen
        runner = threading.Thread(target=self.mesh.run, args=(quiet,), daemon=True)
        runner.start()
        done = threading.Event()

        def follow() -> None:  # the learner's step 4 times a second, for the plot
            while not done.wait(0.25):
                self.learner_step()

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        reports = []
        try:
            if self.wait_for(lambda: (self.learner_step() or 0) > 0, timeout=180) is None:
                raise RuntimeError(f"training did not start; see {self.mesh.run_dir / 'logs'}")
            for name in kills:
                time.sleep(settle)
                if not runner.is_alive():
                    raise RuntimeError(f"the mesh stopped; see {self.mesh.run_dir / 'logs'}")
                reports.append(self.kill(name, timeout))
                self.console.print(_line(reports[-1]))
        finally:
            done.set()
            follower.join()
            self.mesh.config.max_seconds = 0  # the supervisor stops the mesh in order
            runner.join(120)
        return reports

    def kill(self, name: str, timeout: float) -> KillReport:
        acknowledged = self.probe_write()
        step_at_kill = self.learner_step() or 0
        target = self.mesh.service(name)
        restarts_before = len(self.mesh.progress.restarts)
        old_pid = target.process.pid
        os.kill(old_pid, signal.SIGKILL)
        self.kills.append((time.monotonic() - self._start, name))

        def back() -> bool:
            return target.process.pid != old_pid and target.alive() and self.serving(target.address)

        until_back = self.wait_for(back, timeout)
        resumed: list[int] = []

        def progressing() -> bool:
            step = self.learner_step()
            if step is None:
                return False
            resumed.append(step)
            return len(resumed) > 1 and step > resumed[0]

        until_progress = self.wait_for(progressing, timeout) if until_back is not None else None
        restored = self.restored_step() if target in self.mesh.learners else None
        resumed_at = (restored if restored is not None else resumed[0]) if resumed else 0
        stored = self.probe_stored()
        new_restarts = self.mesh.progress.restarts[restarts_before:]
        ring = [r.name for r in self.mesh.learners] if len(self.mesh.learners) > 1 else []
        others = [m for m in new_restarts if not m.startswith(f"{name} exited")]
        peers = bool(ring) and name in ring and any("restarting the learner ring" in m for m in new_restarts)
        if peers:
            others = [m for m in others if "restarting the learner ring" not in m]
        return KillReport(
            service=name,
            probe_items_acknowledged=acknowledged,
            probe_items_lost=acknowledged - stored,
            seconds_until_back=until_back,
            seconds_until_training_progresses=None if until_progress is None else until_back + until_progress,
            learner_step_at_kill=step_at_kill,
            learner_steps_lost=max(0, step_at_kill - resumed_at),
            other_restarts=others,
            ring_peers_restarted=peers,
        )

    def restored_step(self) -> int | None:
        """The update rank 0 resumed from after its last start (from its log)."""
        found = re.findall(r"rank 0 of \d+ \(\w+\) starts at update (\d+)", self.mesh.learners[0].log_path.read_text())
        return int(found[-1]) if found else None

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(10, 4), dpi=100)
        if self.steps:
            t, step = zip(*sorted(self.steps))
            axes.plot(t, step, ".-", markersize=2)
        for when, name in self.kills:
            axes.axvline(when, color="red", alpha=0.5)
            axes.text(when, axes.get_ylim()[1] * 0.95, f" kill {name}", rotation=90, va="top", fontsize=8)
        axes.set_xlabel("seconds")
        axes.set_ylabel("learner step")
        axes.set_title("training through kill -9 of each service")
        figure.tight_layout()
        figure.savefig(path)
        plt.close(figure)


def _line(report: KillReport) -> str:
    def seconds(value):
        return "never" if value is None else f"{value:.1f} s"

    return (
        f"kill -9 {report.service}: lost {report.probe_items_lost} of {report.probe_items_acknowledged} acknowledged "
        f"items; back after {seconds(report.seconds_until_back)}, training after "
        f"{seconds(report.seconds_until_training_progresses)}; learner steps lost {report.learner_steps_lost}; "
        f"other restarts: {report.other_restarts or 'none'}"
    )


def default_kills(config: MeshConfig) -> list[str]:
    learner = "learner-1" if config.learners > 1 else "learner"
    return ["actor-0", "replay", learner, "parameter", *(["viewer"] if config.viewer else [])]


def run(config: MeshConfig, kills: list[str] | None, settle: float, timeout: float, console: Console,
        plot: Path) -> dict:  # fmt: skip
    chaos = Chaos(config, console)
    kills = kills or default_kills(config)
    console.print(f"[bold]chaos[/]: kill -9 {', '.join(kills)} in turn; run dir {chaos.mesh.run_dir}")
    reports = chaos.run(kills, settle, timeout)
    results = {
        "store": "cassandra" if config.cassandra else "embedded (acknowledgement log, no checkpoints)",
        "learners": config.learners,
        "kills": [asdict(r) for r in reports],
        "passed": all(
            r.probe_items_lost == 0 and r.seconds_until_training_progresses is not None and not r.other_restarts
            for r in reports
        ),  # fmt: skip
    }
    plot.parent.mkdir(parents=True, exist_ok=True)
    chaos.plot(plot)
    table = Table("killed", "items lost", "back after", "training after", "steps lost", "other crashes")
    for r in reports:
        table.add_row(
            r.service + (" (ring restarted)" if r.ring_peers_restarted else ""),
            f"{r.probe_items_lost} of {r.probe_items_acknowledged}",
            "never" if r.seconds_until_back is None else f"{r.seconds_until_back:.1f} s",
            "never" if r.seconds_until_training_progresses is None else f"{r.seconds_until_training_progresses:.1f} s",
            str(r.learner_steps_lost),
            ", ".join(r.other_restarts) or "none",
        )
    console.print(table)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learners", type=int, default=2, help="learner ranks (2: a torch ring; default 2)")
    parser.add_argument("--cassandra", help="contact points: replay on a ring (make cassandra-up)")
    parser.add_argument("--kills", help="services to kill, comma-separated (default: one of each)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of training between kills")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for recovery per kill")
    parser.add_argument("--out", type=Path, default=RESULTS / "chaos.json", help="results; the plot goes beside it")
    parser.add_argument("--run-dir", type=Path, help="keep the mesh's logs and data here (default: a temporary one)")
    args = parser.parse_args(argv)
    console = Console()
    plot = args.out.with_suffix(".png")
    with tempfile.TemporaryDirectory() as work:
        config = MeshConfig(
            learners=args.learners, ring="torch", cassandra=args.cassandra, checkpoint_every=20,
            max_seconds=3600, max_env_steps=0, target_return=1e9, run_dir=args.run_dir or Path(work) / "mesh",
        )  # fmt: skip
        try:
            kills = args.kills.split(",") if args.kills else None
            results = run(config, kills, args.settle, args.timeout, console, plot)
        except (RuntimeError, RlringsError) as error:
            console.print(f"[red]chaos: {error}[/]")
            return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    console.print(f"{'passed' if results['passed'] else 'FAILED'}; results: {args.out}, plot: {plot}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

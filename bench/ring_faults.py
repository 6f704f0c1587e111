"""Replay on a Cassandra ring under the faults a cluster meets, and what each costs.

One three-node ring on 127.0.0.1-3 (RF 3, writes and reads at QUORUM), started
here; each scenario gets a keyspace of its own. Writers are processes of their
own, each streaming items numbered from its own base, so the items it has had
acknowledged are exactly its first ``acked`` numbers (acks come in order).
Replay shards are processes too, killed with SIGKILL.

Scenarios:

- ``shards``: two shards share a keyspace, each written by two writer
  processes into a queue (FIFO, each item drawn once, rate-limited); both
  shards are killed mid-stream and restarted while their writers retry.
- ``beyond_memory``: a uniform table holding 256 items in memory evicts into
  the ring; its shard is killed mid-stream and restarted.
- ``node_catch_up``: node 3 is killed during writes and writes go on at
  QUORUM; node 3 comes back and catches up (hinted handoff) while writes go
  on; then node 1 is killed and the shard restarts, reading at QUORUM from
  nodes 2 and 3.
- ``rolling_restart``: every node is restarted in turn (drained, stopped,
  started) while the writers go on.

Each reports items acknowledged; lost (acknowledged, not delivered and not
held); duplicates (delivered more than once); held but not deliverable
(acknowledged and in the shard, but sampling cannot reach them: the issue a
rebuilt queue's limiter once had); and the seconds from a shard's restart
until it serves again (its tables rebuilt). Queues are checked by draining
them through the shard; the uniform table by what a restarted shard can
sample, in memory and beyond it (its index of older rows).

    python -m bench.ring_faults [--quick] [--scenarios shards,beyond_memory,node_catch_up,rolling_restart]

Results: bench/results/ring_faults.json (and the table printed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from dev.cassandra_ring import Ring
from rlrings.clients.replay import ReplayClient
from rlrings.core.errors import RlringsError
from rlrings.ops.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
HEAP = "384M"
CHUNK = 8
WRITER_RATE = 200
SIGNATURE = {"id": {"dtype": "int64", "shape": []}}
QUEUE = {
    "name": "q", "signature": SIGNATURE, "max_size": 200_000, "selector": "fifo", "max_times_sampled": 1,
    "rate_limiter": {"min_size_to_sample": 1, "samples_per_insert": 1.0, "min_diff": 0, "max_diff": 200_000},
}  # fmt: skip
UNIFORM = {"name": "u", "signature": SIGNATURE, "max_size": 256, "selector": "uniform"}


@dataclass
class FaultReport:
    scenario: str
    acknowledged: int
    lost: int
    duplicates: int
    held_not_deliverable: int
    seconds_until_serving: list[float]
    """From each shard restart until the shard answers SERVING (its tables rebuilt)."""
    seconds: float
    """The whole scenario, faults and checks included."""


# -- writers: processes of their own ---------------------------------------------


def _write(address: str, table: str, base: int, stop, acked) -> None:
    """A writer process: chunks of CHUNK items numbered from ``base`` until ``stop``, at most
    WRITER_RATE items a second (an actor's pace, not a flood that fills the queue while a node
    restarts), retrying through shard restarts; ``acked`` holds how many replay acknowledged."""
    client = ReplayClient(address).wait_ready(120)
    writer = client.writer(table, chunk_length=CHUNK, max_in_flight=8, retry_seconds=180)
    step, began = base, time.monotonic()
    try:
        while not stop.is_set():
            writer.write_chunk({"id": np.arange(step, step + CHUNK, dtype=np.int64)})
            step += CHUNK
            acked.value = writer.acked_items
            ahead = (step - base) / WRITER_RATE - (time.monotonic() - began)
            if ahead > 0:
                stop.wait(ahead)
        writer.flush(timeout=180)
    finally:
        acked.value = writer.acked_items
        writer.close(flush=False)
        client.close()


class Writers:
    """Writer processes, each numbering its items from its own base."""

    def __init__(self, targets: list[tuple[str, str]]):
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.bases = [(index + 1) * 1_000_000_000 for index in range(len(targets))]
        self.acked = [context.Value("q", 0) for _ in targets]
        self.targets = targets
        self.processes = [
            context.Process(target=_write, args=(address, table, base, self.stop, acked), daemon=True)
            for (address, table), base, acked in zip(targets, self.bases, self.acked)
        ]
        for process in self.processes:
            process.start()

    def writer_of(self, item: int) -> int:
        """Which writer numbered this item."""
        return item // 1_000_000_000 - 1

    def total(self) -> int:
        return sum(value.value for value in self.acked)

    def wait_for(self, items: int, timeout: float = 120.0) -> None:
        """Until the writers together have ``items`` more acknowledged."""
        goal, deadline = self.total() + items, time.monotonic() + timeout
        while self.total() < goal:
            if time.monotonic() > deadline:
                raise TimeoutError(f"writers: {self.total()} items acknowledged, waited for {goal}")
            time.sleep(0.05)

    def finish(self) -> dict[str, set[int]]:
        """Stops the writers once they have flushed; the acknowledged items by table address."""
        self.stop.set()
        for process in self.processes:
            process.join(240)
        acked: dict[str, set[int]] = {}
        for (address, table), base, value in zip(self.targets, self.bases, self.acked):
            acked.setdefault(f"{address}/{table}", set()).update(range(base, base + value.value))
        return acked


# -- shards: processes of their own ----------------------------------------------


class Shard:
    def __init__(self, ring: Ring, directory: Path, keyspace: str, name: str, tables: list[dict]):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.config = directory / f"replay-{keyspace}-{name}.json"
        self.config.write_text(json.dumps({
            "port": self.port, "metrics_port": 0, "tables": tables, "store": "cassandra", "grace_seconds": 1,
            "cassandra": {"contact_points": ring.contact_points, "keyspace": keyspace, "replication_factor": 3,
                          "shard": name, "state_interval_seconds": 0.5, "reservoir_items": 4096},
        }))  # fmt: skip
        self.log = directory / f"replay-{keyspace}-{name}.log"
        self.process: subprocess.Popen | None = None
        self.restarts: list[float] = []

    def start(self) -> float:
        """Starts the shard; returns the seconds until it serves."""
        started = time.monotonic()
        with open(self.log, "ab") as log:
            command = [sys.executable, "-m", "rlrings.services.replay", "--config", str(self.config)]
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        ReplayClient(self.address).wait_ready(180).close()
        return time.monotonic() - started

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def restart(self) -> None:
        self.kill()
        self.restarts.append(self.start())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)


@contextlib.contextmanager
def one_shard_two_writers(ring: Ring, directory: Path, keyspace: str, table: dict):
    """A shard holding ``table`` and two writer processes streaming into it; the shard stops after."""
    shard = Shard(ring, directory, keyspace, "s", [table])
    shard.start()
    writers = Writers([(shard.address, table["name"])] * 2)
    try:
        yield shard, writers
    finally:
        writers.stop.set()
        shard.stop()


def drain(shard: Shard, table: str) -> tuple[list[int], int]:
    """(every item a queue hands out until it has no more, items it still holds after that)."""
    delivered: list[int] = []
    with ReplayClient(shard.address) as client:
        while True:
            size = client.info([table])[table].size
            if size == 0:
                return delivered, 0
            try:
                batch = next(iter(client.sample(table, batch_size=min(size, 4096), num_batches=1, timeout=10)))
            except RlringsError:  # held back past the timeout: held, not deliverable
                return delivered, client.info([table])[table].size
            delivered.extend(batch.columns["id"][:, 0].tolist())


def judge(name: str, acked: set[int], delivered: list[int], held: int, restarts: list[float], started: float):
    """A scenario's figures. Items sent whose acks never came may be delivered too (they were
    stored; the writer could not know): only acknowledged ones are owed."""
    counts = Counter(delivered)
    missing = len(acked - counts.keys())
    return FaultReport(
        scenario=name,
        acknowledged=len(acked),
        lost=max(0, missing - held),
        duplicates=sum(c - 1 for c in counts.values() if c > 1),
        held_not_deliverable=held,
        seconds_until_serving=[round(s, 2) for s in restarts],
        seconds=round(time.monotonic() - started, 1),
    )


# -- scenarios ---------------------------------------------------------------------


def shards(ring: Ring, directory: Path, quick: bool) -> FaultReport:
    started = time.monotonic()
    pair = [Shard(ring, directory, "shards", name, [QUEUE]) for name in ("a", "b")]
    for shard in pair:
        shard.start()
    writers = Writers([(shard.address, "q") for shard in pair for _ in range(2)])
    try:
        for _ in range(1 if quick else 3):
            writers.wait_for(800 if quick else 4000)
            for shard in pair:  # kill -9 both mid-stream, then restart while the writers retry
                shard.restart()
        writers.wait_for(400 if quick else 2000)
        acked = writers.finish()
        delivered, held = [], 0
        for shard in pair:
            items, left = drain(shard, "q")
            delivered += items
            held += left
            writers_of_shard = {i for i, (address, _) in enumerate(writers.targets) if address == shard.address}
            strangers = [item for item in items if writers.writer_of(item) not in writers_of_shard]
            assert not strangers, f"shard {shard.address} delivered {len(strangers)} items of the other shard"
        everything = set().union(*acked.values())
        return judge("shards", everything, delivered, held, [s for shard in pair for s in shard.restarts], started)
    finally:
        for shard in pair:
            shard.stop()


def beyond_memory(ring: Ring, directory: Path, quick: bool) -> FaultReport:
    from rlrings.rpc.config import load_config
    from rlrings.services.replay.cassandra_store import CassandraStore
    from rlrings.services.replay.config import ReplayConfig

    started = time.monotonic()
    with one_shard_two_writers(ring, directory, "beyond", UNIFORM) as (shard, writers):
        writers.wait_for(1500 if quick else 8000)
        shard.restart()  # kill -9 mid-stream: most items are already beyond memory
        writers.wait_for(500 if quick else 4000)
        acked = set().union(*writers.finish().values())
        shard.restart()  # what a fresh shard finds, in memory and beyond it
        with ReplayClient(shard.address) as client:
            in_memory = client.info(["u"])["u"].size
        config = load_config(ReplayConfig, ["--config", str(shard.config)])
        store = CassandraStore(config.cassandra)
        store.connect()
        try:  # what the shard rebuilt, read the way it reads: newest in memory, older rows indexed
            signature = config.tables[0].build_signature()
            rebuilt = store.rebuild("u", signature, 1, UNIFORM["max_size"])
            held = rebuilt.state.columns["id"][:, 0].tolist() if rebuilt.state is not None else []
            older = store.fetch("u", signature, 1, rebuilt.older).columns["id"][:, 0].tolist()
        finally:
            store.close()
        assert in_memory == len(held), f"the shard holds {in_memory} items in memory, a rebuild gives {len(held)}"
        return judge("beyond_memory", acked, held + older, 0, shard.restarts, started)


def node_catch_up(ring: Ring, directory: Path, quick: bool) -> FaultReport:
    started = time.monotonic()
    try:
        with one_shard_two_writers(ring, directory, "catchup", QUEUE) as (shard, writers):
            writers.wait_for(400 if quick else 2000)
            ring.nodes[2].stop(kill=True)  # node 3 down: QUORUM is 2 of 3, writes go on
            writers.wait_for(800 if quick else 4000)
            ring.up(heap=HEAP)  # node 3 back: hints replay what it missed
            writers.wait_for(400 if quick else 2000)
            acked = set().union(*writers.finish().values())
            time.sleep(5 if quick else 15)  # hinted handoff
            ring.nodes[0].stop(kill=True)  # another node down: a restart reads at QUORUM from nodes 2 and 3
            shard.restart()
            delivered, held = drain(shard, "q")
            return judge("node_catch_up", acked, delivered, held, shard.restarts, started)
    finally:
        ring.up(heap=HEAP)


def rolling_restart(ring: Ring, directory: Path, quick: bool) -> FaultReport:
    started = time.monotonic()
    with one_shard_two_writers(ring, directory, "rolling", QUEUE) as (shard, writers):
        writers.wait_for(400 if quick else 2000)
        for node in ring.nodes:  # one at a time, as an upgrade would
            node.stop()  # SIGTERM: Cassandra drains and flushes
            writers.wait_for(200 if quick else 1000)
            ring.up(heap=HEAP)
            writers.wait_for(200 if quick else 1000)
        acked = set().union(*writers.finish().values())
        delivered, held = drain(shard, "q")
        return judge("rolling_restart", acked, delivered, held, shard.restarts, started)


SCENARIOS = {"shards": shards, "beyond_memory": beyond_memory, "node_catch_up": node_catch_up,
             "rolling_restart": rolling_restart}  # fmt: skip


def run(scenarios: list[str], quick: bool, console: Console, directory: Path | None = None) -> list[FaultReport]:
    """Starts a ring, runs the scenarios on it, wipes it."""
    work = Path(directory or tempfile.mkdtemp(prefix="rlrings-ring-faults-"))
    ring = Ring(work / "ring", nodes=3)
    reports = []
    try:
        with console.status("starting a three-node Cassandra ring"):
            ring.up(heap=HEAP)
        for name in scenarios:
            with console.status(f"scenario {name}"):
                reports.append(SCENARIOS[name](ring, work, quick))
            console.print(_line(reports[-1]))
    finally:
        ring.wipe()
        if directory is None:
            shutil.rmtree(work, ignore_errors=True)
    return reports


def _line(report: FaultReport) -> str:
    return (f"{report.scenario}: {report.acknowledged:,} acknowledged, {report.lost} lost, {report.duplicates} "
            f"duplicates, {report.held_not_deliverable} held but not deliverable, serving again after "
            f"{report.seconds_until_serving} s ({report.seconds} s in all)")  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated (default: all)")
    parser.add_argument("--quick", action="store_true", help="fewer items and one kill per scenario")
    parser.add_argument("--out", type=Path, default=RESULTS / "ring_faults.json")
    args = parser.parse_args(argv)
    console = Console()
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"--scenarios: unknown {unknown}; known: {sorted(SCENARIOS)}")
    reports = run(names, args.quick, console)
    table = Table(title="Replay on a three-node ring under faults")
    for column in ("scenario", "acknowledged", "lost", "duplicates", "held, not deliverable", "s until serving"):
        table.add_column(column)
    for r in reports:
        table.add_row(r.scenario, f"{r.acknowledged:,}", str(r.lost), str(r.duplicates),
                      str(r.held_not_deliverable), ", ".join(map(str, r.seconds_until_serving)) or "-")  # fmt: skip
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(r) for r in reports], indent=2))
    failed = [r.scenario for r in reports if r.lost or r.duplicates or r.held_not_deliverable]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

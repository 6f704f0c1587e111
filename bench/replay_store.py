"""Replay's Cassandra store against its embedded store, in one run.

A three-node ring (dev/cassandra_ring.py) takes replay's chunks at QUORUM with
replication factor 3; the embedded store keeps them in memory with local
snapshots. Both get the same writers (separate processes, bench/items.py
frames, chunks of 32 steps), alternating in short rounds on this machine, and
the insert rates are compared as a ratio. Each round also measures the ring's own
ceiling on this machine: a bare cassandra-driver writer (one process, one session with
the store's settings) sending the same rows, LZ4 blobs built up front, at the same
consistency level with as many writes in flight as the writers keep on replay; rlrings'
durable rate is reported as a ratio to it. A longer run with the ring records
the store's backlog (chunks sent to Cassandra, not yet confirmed) every second,
to show it does not grow without bound. After each ring run the server is
stopped and the ring is read back: acknowledged items missing from it are
counted as lost. Results: bench/results/replay_store.json and replay_store.png.

    python -m bench.replay_store [--rounds 3] [--seconds 15] [--backlog-seconds 60] [--writers 3]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from subprocess import PIPE

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.items import ITEM_BYTES, chunks
from rlrings.ops.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PROFILES = {
    # an Atari-sized frame per item (bench/items.py), as a pixel-based game sends
    "frames": {
        "signature": {
            "obs": {"dtype": "uint8", "shape": [64, 64, 3]},
            "reward": {"dtype": "float32", "shape": []},
            "action": {"dtype": "int32", "shape": []},
        },
        "item_bytes": ITEM_BYTES,
        "max_size": 20_000,
    },
    # a CartPole transition per item: the mesh's own default game
    "transitions": {
        "signature": {
            "obs": {"dtype": "float32", "shape": [4]},
            "action": {"dtype": "int32", "shape": []},
            "reward": {"dtype": "float32", "shape": []},
            "done": {"dtype": "bool", "shape": []},
        },
        "item_bytes": 16 + 4 + 4 + 1,
        "max_size": 200_000,
    },
}
CHUNK = 32
WRITER_IN_FLIGHT = 8  # chunks each writer keeps unconfirmed


def make_chunks(profile: str, seed: int) -> list[dict]:
    if profile == "frames":
        return chunks(CHUNK * 64, CHUNK, seed=seed)
    rng = np.random.default_rng(seed)
    return [
        {
            "obs": rng.standard_normal((CHUNK, 4), dtype=np.float32),
            "action": rng.integers(0, 2, CHUNK, dtype=np.int32),
            "reward": np.ones(CHUNK, np.float32),
            "done": rng.random(CHUNK) < 0.05,
        }
        for _ in range(64)
    ]


def write(address: str, seconds: float, seed: int, profile: str) -> dict:
    """One writer process: inserts for ``seconds``, then flushes; reports acknowledged items."""
    from rlrings.clients.replay import ReplayClient

    data = make_chunks(profile, seed)
    with ReplayClient(address).wait_ready(120) as client:
        with client.writer("bench", chunk_length=CHUNK, max_in_flight=WRITER_IN_FLIGHT) as writer:
            start = time.perf_counter()
            i = 0
            while time.perf_counter() - start < seconds:
                writer.write_chunk(data[i % len(data)])
                i += 1
            writer.flush(120)
            elapsed = time.perf_counter() - start
        return {"items": writer.acked_items, "seconds": elapsed}


def write_bare(contact_points: list[str], keyspace: str, seconds: float, in_flight: int, seed: int,
               profile: str) -> dict:  # fmt: skip
    """The ring's own ceiling: one process with one cassandra-driver session (the store's
    cluster settings) inserting the replay store's rows for ``seconds``, LZ4 blobs built up
    front, ``in_flight`` writes outstanding at the store's consistency level."""
    from rlrings.rpc import codec
    from rlrings.services.replay.cassandra_store import CassandraStore
    from rlrings.services.replay.config import CassandraConfig
    from rlrings.v1 import tensor_pb2

    config = CassandraConfig(contact_points=contact_points, keyspace=keyspace, replication_factor=3, shard="b")
    store = CassandraStore(config)
    store.connect()  # the same schema, driver settings and consistency level as the replay server
    session = store.session
    insert = session.prepare(
        f"INSERT INTO {keyspace}.segments (table_name, shard, window, part, first_key, items, chunk_key, writer_id, "
        "sequence, policy_version, priorities, columns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"
    )
    lz4 = codec.Compression.COMPRESSION_LZ4
    blobs = [
        tensor_pb2.Chunk(columns={name: codec.encode(a, lz4) for name, a in chunk.items()}).SerializeToString()
        for chunk in make_chunks(profile, seed)
    ]
    priorities = np.ones(CHUNK, "<f8").tobytes()
    slots = threading.Semaphore(in_flight)
    errors: list[BaseException] = []
    confirmed = [0]
    lock = threading.Lock()

    def done(_result) -> None:
        with lock:
            confirmed[0] += CHUNK
        slots.release()

    def failed(error: BaseException) -> None:
        errors.append(error)
        slots.release()

    window, written, sequence = int(time.time() // config.window_seconds), 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds and not errors:
        slots.acquire()
        blob = blobs[sequence % len(blobs)]
        part = written // config.partition_bytes
        row = ("bench", "b", window, part, sequence * CHUNK, CHUNK, sequence * CHUNK, f"bare-{seed}", sequence, 0,
               priorities, blob, config.ttl_seconds)  # fmt: skip
        session.execute_async(insert, row).add_callbacks(done, failed)
        written += len(blob)
        sequence += 1
    for _ in range(in_flight):  # every write confirmed
        slots.acquire()
    elapsed = time.perf_counter() - start
    store.close()
    if errors:
        raise RuntimeError(f"the bare writer failed: {errors[0]!r}")
    return {"items": confirmed[0], "seconds": elapsed, "items_per_s": confirmed[0] / elapsed}


def measure_bare(ring: list[str], keyspace: str, writers: int, seconds: float, profile: str) -> dict:
    """``write_bare`` in a process of its own, as many writes in flight as the writers keep on replay."""
    command = [sys.executable, "-m", "bench.replay_store", "--role", "bare", "--contact-points", ",".join(ring),
               "--keyspace", keyspace, "--seconds", str(seconds), "--profile", profile,
               "--in-flight", str(writers * WRITER_IN_FLIGHT)]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"the bare writer failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def start_server(
    store: str, contact_points: list[str], keyspace: str, work: Path, profile: str
) -> tuple[subprocess.Popen, str, int]:
    port, metrics = free_port(), free_port()
    config = {
        "port": port,
        "metrics_port": metrics,
        "store": store,
        "snapshot_dir": str(work / keyspace),
        "tables": [
            {
                "name": "bench",
                "signature": PROFILES[profile]["signature"],
                "max_size": PROFILES[profile]["max_size"],
                "selector": "uniform",
            }
        ],
        "cassandra": {"contact_points": contact_points, "keyspace": keyspace, "replication_factor": 3, "shard": "b"},
    }
    path = work / f"{keyspace}-{store}.yaml"
    path.write_text(json.dumps(config))
    with open(work / f"{keyspace}-{store}.log", "w") as log:  # the child keeps its own descriptor
        server = subprocess.Popen(
            [sys.executable, "-m", "rlrings.services.replay", "--config", str(path)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    from rlrings.clients.replay import ReplayClient

    with ReplayClient(f"127.0.0.1:{port}") as client:
        client.wait_ready(120)
    return server, f"127.0.0.1:{port}", metrics


def run_writers(address: str, writers: int, seconds: float, profile: str) -> dict:
    command = [sys.executable, "-m", "bench.replay_store", "--role", "write", "--address", address,
               "--seconds", str(seconds), "--profile", profile]  # fmt: skip
    procs = [
        subprocess.Popen([*command, "--seed", str(i)], cwd=ROOT, stdout=PIPE, stderr=PIPE, text=True)
        for i in range(writers)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"a writer failed:\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    items, seconds = sum(r["items"] for r in results), max(r["seconds"] for r in results)
    return {"items": items, "seconds": seconds, "items_per_s": items / seconds}


def scrape(metrics_port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    wanted = ("rlrings_replay_store_pending_writes", "rlrings_replay_store_rows_total",
              'rlrings_replay_inserted_items_total{table="bench"}')  # fmt: skip
    values = {}
    for line in text.splitlines():
        for name in wanted:
            if line.startswith(name + " "):
                values[name.split("{")[0]] = float(line.split()[-1])
    return values


def stored_items(contact_points: list[str], keyspace: str) -> int:
    """Items of the bench table in the ring, each chunk counted once."""
    from rlrings.services.replay.cassandra_store import CassandraStore
    from rlrings.services.replay.config import CassandraConfig

    store = CassandraStore(
        CassandraConfig(contact_points=contact_points, keyspace=keyspace, replication_factor=3, shard="b")
    )
    store.connect()
    try:
        return store.stored_items("bench")
    finally:
        store.close()


def stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    server.wait(120)


def measure(store: str, ring: list[str], keyspace: str, writers: int, seconds: float, work: Path, profile: str,
            on_tick=None) -> dict:  # fmt: skip
    server, address, metrics = start_server(store, ring, keyspace, work, profile)
    series: list[dict] = []
    done = threading.Event()

    def watch() -> None:
        start = time.monotonic()
        while not done.wait(1.0):
            try:
                series.append({"t": time.monotonic() - start, **scrape(metrics)})
            except OSError:
                pass
            if on_tick is not None:
                on_tick()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = run_writers(address, writers, seconds, profile)
    finally:
        done.set()
        watcher.join()
        stop(server)
    result["series"] = series
    if store == "cassandra":
        result["stored_items"] = stored_items(ring, keyspace)
        result["lost_items"] = max(0, result["items"] - result["stored_items"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--address", default="", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--profile", default="frames", help=argparse.SUPPRESS)
    parser.add_argument("--keyspace", default="", help=argparse.SUPPRESS)
    parser.add_argument("--in-flight", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3, help="alternating embedded/ring/bare rounds")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of inserting per round")
    parser.add_argument("--backlog-seconds", type=float, default=60.0, help="length of the ring's backlog run")
    parser.add_argument("--writers", type=int, default=3, help="writer processes")
    parser.add_argument("--contact-points", default="", help="use this running ring (comma-separated) instead")
    parser.add_argument("--profiles", default=",".join(PROFILES), help="item kinds to measure (comma-separated)")
    args = parser.parse_args()
    if args.role == "write":
        return print(json.dumps(write(args.address, args.seconds, args.seed, args.profile)))
    if args.role == "bare":
        contact_points = args.contact_points.split(",")
        result = write_bare(contact_points, args.keyspace, args.seconds, args.in_flight, args.seed, args.profile)
        return print(json.dumps(result))

    from dev.cassandra_ring import Ring

    console = Console()
    work = Path(tempfile.mkdtemp(prefix="rlrings-bench-store-"))
    ring = None
    if args.contact_points:
        contact_points = args.contact_points.split(",")
    else:
        console.print("starting a 3-node Cassandra ring on 127.0.0.1-3 ...")
        ring = Ring(work / "ring", nodes=3).up(heap="512M")
        contact_points = ring.contact_points
    results: dict = {"writers": args.writers, "chunk": CHUNK, "profiles": {}}
    try:
        with Progress(console=console) as progress:
            profiles = args.profiles.split(",")
            task = progress.add_task("rounds", total=args.rounds * 3 * len(profiles))
            for profile in profiles:
                rounds = []
                for r in range(args.rounds):
                    entry = {}
                    for store in ("embedded", "cassandra", "bare"):
                        progress.update(task, description=f"{profile}, round {r + 1}: {store}")
                        keyspace = f"bench_{profile}_{r}"
                        if store == "bare":  # the ring's ceiling, in a keyspace of its own
                            entry[store] = measure_bare(
                                contact_points, f"{keyspace}_bare", args.writers, args.seconds, profile
                            )
                        else:
                            entry[store] = measure(
                                store, contact_points, keyspace, args.writers, args.seconds, work, profile
                            )
                        progress.advance(task)
                    rounds.append(entry)
                results["profiles"][profile] = {"item_bytes": PROFILES[profile]["item_bytes"], "rounds": rounds}
            if args.backlog_seconds:
                task = progress.add_task("frames on the ring, backlog run", total=args.backlog_seconds)
                results["backlog"] = measure(
                    "cassandra", contact_points, "bench_backlog", args.writers, args.backlog_seconds, work, "frames",
                    on_tick=lambda: progress.advance(task),
                )  # fmt: skip
    finally:
        if ring is not None:
            ring.wipe()
    summarize(results, console)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "replay_store.json").write_text(json.dumps(results, indent=2))
    if "backlog" in results:
        plot(results["backlog"], RESULTS / "replay_store.png")
    console.print(f"results: {RESULTS / 'replay_store.json'}, plot: {RESULTS / 'replay_store.png'}")


def summarize(results: dict, console: Console) -> None:
    view = Table("measure", "embedded", "Cassandra (3 nodes, RF 3, QUORUM)", "ratio",
                 "bare driver (the ring's ceiling)", "ratio to it")  # fmt: skip
    summary: dict = {"lost_items": 0}
    for profile, entry in results["profiles"].items():
        embedded = [r["embedded"]["items_per_s"] for r in entry["rounds"]]
        ring = [r["cassandra"]["items_per_s"] for r in entry["rounds"]]
        bare = [r["bare"]["items_per_s"] for r in entry["rounds"]]
        figures = {
            "embedded_items_per_s": statistics.median(embedded),
            "cassandra_items_per_s": statistics.median(ring),
            "bare_items_per_s": statistics.median(bare),
            "ratio": statistics.median(c / e for c, e in zip(ring, embedded)),
            "ratio_to_bare": statistics.median(c / b for c, b in zip(ring, bare)),
        }
        summary[profile] = figures
        summary["lost_items"] += sum(r["cassandra"]["lost_items"] for r in entry["rounds"])
        mb = entry["item_bytes"] / 1e6
        view.add_row(
            f"{profile} ({entry['item_bytes']:,} B/item): items/s, MB/s",
            f"{figures['embedded_items_per_s']:,.0f}, {figures['embedded_items_per_s'] * mb:.1f}",
            f"{figures['cassandra_items_per_s']:,.0f}, {figures['cassandra_items_per_s'] * mb:.1f}",
            f"{figures['ratio']:.2f}",
            f"{figures['bare_items_per_s']:,.0f}, {figures['bare_items_per_s'] * mb:.1f}",
            f"{figures['ratio_to_bare']:.2f}",
        )
    backlog = results.get("backlog")
    if backlog is not None:
        pending = [p.get("rlrings_replay_store_pending_writes", 0) for p in backlog["series"]]
        half = len(pending) // 2
        summary["backlog"] = {
            "seconds": backlog["seconds"],
            "items_per_s": backlog["items_per_s"],
            "pending_max": max(pending, default=0),
            "pending_mean_first_half": statistics.fmean(pending[:half]) if half else 0,
            "pending_mean_second_half": statistics.fmean(pending[half:]) if half else 0,
            "lost_items": backlog["lost_items"],
        }
        summary["lost_items"] += backlog["lost_items"]
        b = summary["backlog"]
        view.add_row(f"frames, {b['seconds']:.0f}s run: items/s", "", f"{b['items_per_s']:,.0f}", "")
        view.add_row("backlog: max / mean 1st half / 2nd half", "",
                     f"{b['pending_max']:.0f} / {b['pending_mean_first_half']:.1f} / "
                     f"{b['pending_mean_second_half']:.1f} chunks", "")  # fmt: skip
    view.add_row("acknowledged items lost", "", str(summary["lost_items"]), "")
    results["summary"] = summary
    console.print(view)


def plot(backlog: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = backlog["series"]
    t = [p["t"] for p in series]
    pending = [p.get("rlrings_replay_store_pending_writes", 0) for p in series]
    inserted = [p.get("rlrings_replay_inserted_items_total", 0) for p in series]
    rate = [0.0] + [(b - a) / max(1e-9, tb - ta) for a, b, ta, tb in zip(inserted, inserted[1:], t, t[1:])]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), dpi=100, sharex=True)
    top.plot(t, rate, color="tab:blue")
    top.set_ylabel("inserted items/s")
    top.set_title("Replay on a 3-node Cassandra ring (RF 3, QUORUM)")
    bottom.plot(t, pending, color="tab:red")
    bottom.set_ylabel("chunks awaiting the ring")
    bottom.set_xlabel("seconds")
    figure.tight_layout()
    figure.savefig(path)


if __name__ == "__main__":
    main()

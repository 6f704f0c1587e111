"""``rlrings up``: the local mesh on one machine, on the embedded store.

Each service runs as its own process on a free loopback port, as it would in a
cluster. The mesh so far is the replay service with a demo writer (a toy game
producing 64x64 RGB frames) and a demo sampler; the actor, learner and
parameter services join it as they land.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table as RichTable

from rlrings.errors import RlringsError, UnavailableError
from rlrings.replay_client import ReplayClient

DEMO_TABLE = {
    "name": "demo",
    "max_size": 20_000,
    "selector": "uniform",
    "signature": {
        "obs": {"dtype": "uint8", "shape": [64, 64, 3]},
        "action": {"dtype": "int32", "shape": []},
        "reward": {"dtype": "float32", "shape": []},
    },
    # Learners may reuse each item about 4 times; sampling waits for 1000 items.
    "rate_limiter": {"min_size_to_sample": 1000, "samples_per_insert": 4.0, "error_buffer": 2000.0},
}


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ServiceProcess:
    """A service started as a child process, stopped with SIGTERM."""

    name: str
    address: str
    process: subprocess.Popen
    log_path: Path

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def start_replay(run_dir: Path, tables: list[dict], store: str = "embedded") -> ServiceProcess:
    """Starts ``python -m services.replay`` with a config file written to ``run_dir``."""
    port, metrics_port = free_port(), free_port()
    config = {
        "port": port,
        "metrics_port": metrics_port,
        "store": store,
        "snapshot_dir": str(run_dir / "replay"),
        "snapshot_interval_seconds": 60,
        "tables": tables,
    }
    config_path = run_dir / "replay.yaml"
    config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    log_path = run_dir / "replay.log"
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "services.replay", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return ServiceProcess("replay", f"127.0.0.1:{port}", process, log_path)


@dataclass
class DemoStats:
    inserted: int = 0
    sampled: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)


def _toy_frames(steps: int, rng: np.random.Generator, start: int) -> np.ndarray:
    """A bright square moving across a dark field: cheap frames that look like a game."""
    frames = np.full((steps, 64, 64, 3), 16, dtype=np.uint8)
    for i in range(steps):
        x = (start + i) % 56
        frames[i, 24:32, x : x + 8] = (250, 200, 40)
    frames += rng.integers(0, 8, size=frames.shape, dtype=np.uint8)
    return frames


def _write(client: ReplayClient, stats: DemoStats, stop: threading.Event) -> None:
    rng = np.random.default_rng(0)
    chunk = 32
    try:
        with client.writer("demo", chunk_length=chunk, max_in_flight=4) as writer:
            step = 0
            while not stop.is_set():
                actions = rng.integers(0, 4, size=chunk).astype(np.int32)
                writer.write_chunk(
                    {
                        "obs": _toy_frames(chunk, rng, step),
                        "action": actions,
                        "reward": (actions == 1).astype(np.float32),
                    },
                    policy_version=0,
                )
                step += chunk
                stats.inserted = writer.acked_items
            writer.flush(30)
            stats.inserted = writer.acked_items
    except (RlringsError, TimeoutError) as error:
        stats.errors.append(f"writer: {error}")


def _sample(client: ReplayClient, stats: DemoStats, stop: threading.Event) -> None:
    try:
        with client.sample("demo", batch_size=128, prefetch=2) as sampler:
            for batch in sampler:
                stats.sampled += len(batch)
                stats.batches += 1
                if stop.is_set():
                    return
    except RlringsError as error:
        if not stop.is_set():
            stats.errors.append(f"sampler: {error}")


def run_local(seconds: float, run_dir: Path, console: Console | None = None) -> int:
    """Runs the local mesh for ``seconds`` and prints a summary. Returns an exit status."""
    console = console or Console()
    run_dir.mkdir(parents=True, exist_ok=True)
    replay = start_replay(run_dir, [DEMO_TABLE])
    console.print(f"[bold]rlrings[/] local mesh in {run_dir}: replay at {replay.address} (log {replay.log_path})")
    stats = DemoStats()
    stop_writing, stop_sampling = threading.Event(), threading.Event()
    status = 1
    try:
        client = ReplayClient(replay.address)
        try:
            client.wait_ready(60)
        except UnavailableError:
            console.print(f"[red]replay did not start; see {replay.log_path}[/]")
            return 1
        writer = threading.Thread(target=_write, args=(client, stats, stop_writing), daemon=True)
        sampler = threading.Thread(target=_sample, args=(client, stats, stop_sampling), daemon=True)
        writer.start()
        sampler.start()
        _show_progress(console, client, stats, seconds, replay)
        # The writer stops first: its last chunks may need the sampler to move
        # the rate limiter before they are accepted.
        stop_writing.set()
        writer.join(60)
        stop_sampling.set()
        sampler.join(30)
        table = client.info(["demo"])["demo"]
        checkpoint = client.checkpoint()
        client.close()
        _summary(console, stats, table, seconds, checkpoint.path)
        status = 0 if not stats.errors else 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; stopping the mesh[/]")
        stop_writing.set()
        stop_sampling.set()
        status = 130
    finally:
        code = replay.stop()
        if code != 0:
            console.print(f"[red]replay exited with {code}; see {replay.log_path}[/]")
            status = status or 1
    for error in stats.errors:
        console.print(f"[red]{error}[/]")
    return status


def _show_progress(console: Console, client: ReplayClient, stats: DemoStats, seconds: float, replay) -> None:
    progress = Progress(
        TextColumn("[bold]demo run"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn()
    )
    task = progress.add_task("run", total=seconds)
    start = time.monotonic()
    last = (start, 0, 0)
    rates = (0.0, 0.0)
    with Live(console=console, refresh_per_second=4) as live:
        while (elapsed := time.monotonic() - start) < seconds and not stats.errors:
            if replay.process.poll() is not None:
                stats.errors.append(f"replay exited with {replay.process.returncode}; see {replay.log_path}")
                break
            now = time.monotonic()
            if now - last[0] >= 1.0:
                rates = ((stats.inserted - last[1]) / (now - last[0]), (stats.sampled - last[2]) / (now - last[0]))
                last = (now, stats.inserted, stats.sampled)
            info = client.info(["demo"])["demo"]
            progress.update(task, completed=elapsed)
            grid = RichTable.grid(padding=(0, 2))
            grid.add_row("inserted items", f"{stats.inserted:,}", f"{rates[0]:,.0f}/s")
            grid.add_row("sampled items", f"{stats.sampled:,}", f"{rates[1]:,.0f}/s")
            grid.add_row("table size", f"{info.size:,} / {info.max_size:,}", f"evicted {info.evicted_items:,}")
            grid.add_row(
                "rate limiter waits",
                f"insert {info.rate_limiter.insert_wait_seconds:.1f}s",
                f"sample {info.rate_limiter.sample_wait_seconds:.1f}s",
            )
            live.update(_stack(progress, grid))
            time.sleep(0.25)


def _stack(*renderables):
    grid = RichTable.grid()
    for renderable in renderables:
        grid.add_row(renderable)
    return grid


def _summary(console: Console, stats: DemoStats, table, seconds: float, snapshot: str) -> None:
    summary = RichTable(title="local mesh summary", show_header=False)
    summary.add_row("inserted items", f"{stats.inserted:,} ({stats.inserted / seconds:,.0f}/s)")
    summary.add_row(
        "sampled items", f"{stats.sampled:,} in {stats.batches:,} batches ({stats.sampled / seconds:,.0f}/s)"
    )
    ratio = stats.sampled / stats.inserted if stats.inserted else 0.0
    summary.add_row("samples per insert", f"{ratio:.2f} (target 4.0)")
    summary.add_row("table size", f"{table.size:,} items")
    summary.add_row("snapshot", snapshot)
    console.print(summary)

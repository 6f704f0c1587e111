"""Load tests: one replay server under 32 writers and 4 samplers with 200 idle
unauthenticated streams held open beside them, one parameter service under 64
watchers while weights are published every second; both at the chart's default
server settings (no hand-raised worker counts).

Every client is a real gRPC client on loopback, spread over a few client
processes (threads inside each), and the load is bounded in count and time:
a fixed number of clients for a fixed number of seconds. Writers keep at most
``window`` chunks unacknowledged and time each chunk from send to ack; the
server's resident memory is read every second. Figures: errors (target 0),
p50/p99 insert latency, throughput over time, resident memory at start, in the
minute after warm-up and in the last minute (growth after warm-up under 10%;
see :func:`memory_figures`); for the parameter
service, how long a new version takes to reach every watcher, and whether each
saw every version; for replay, the latency of an admin ``Info`` call made
every 100 ms while all of it goes on. Then the viewer: 8 GIF requests at once beside a
watching page (its memory, the page's frames per second). Results:
bench/results/load.json and load.png.

    python -m bench.load [--seconds 300] [--writers 32] [--samplers 4] [--idle-streams 200] [--watchers 64]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.replay_store import PROFILES, make_chunks
from rlrings.ops.processes import free_port
from rlrings.rpc import codec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CLIENT_PROCESSES = 4
WARM_UP_SECONDS = 30
GIF_ENV = "Acrobot-v1"  # an untrained policy plays it to the 500-step limit: GIFs as long as the viewer makes them


# -- client processes --------------------------------------------------------------


def replay_clients(address: str, writers: int, samplers: int, seconds: float, profile: str, window: int, out) -> None:
    """One client process: ``writers`` insert streams and ``samplers`` sample streams, in threads."""
    import grpc

    from rlrings.v1 import replay_pb2, replay_pb2_grpc, tensor_pb2

    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = replay_pb2_grpc.ReplayServiceStub(channel)
    start = time.time()
    stop_at = time.monotonic() + seconds
    lock = threading.Lock()
    acked = np.zeros(int(seconds) + 2, np.int64)  # items acknowledged per second since start
    sampled = np.zeros(int(seconds) + 2, np.int64)
    latencies: list[float] = []
    errors: list[str] = []

    def write(seed: int) -> None:
        columns = [{k: codec.encode(v) for k, v in chunk.items()} for chunk in make_chunks(profile, seed)]
        writer_id, sequence = uuid.uuid4().hex, 0
        while time.monotonic() < stop_at:
            slots = threading.Semaphore(window)
            sent: dict[int, float] = {}

            def requests(slots=slots, sent=sent):
                nonlocal sequence
                while time.monotonic() < stop_at:
                    if not slots.acquire(timeout=1.0):
                        continue
                    sequence += 1
                    sent[sequence] = time.perf_counter()
                    chunk = tensor_pb2.Chunk(table="load", columns=columns[sequence % len(columns)],
                                             writer_id=writer_id, sequence=sequence)  # fmt: skip
                    yield replay_pb2.InsertRequest(chunk=chunk)

            try:
                for response in stub.Insert(requests()):
                    latency = time.perf_counter() - sent.pop(response.sequence)
                    second = int(time.time() - start)
                    with lock:
                        latencies.append(latency)
                        acked[min(second, len(acked) - 1)] += len(response.keys)
                    slots.release()
            except grpc.RpcError as error:
                with lock:
                    errors.append(f"insert: {error.code().name}: {error.details()}")

    def sample() -> None:
        while time.monotonic() < stop_at:
            grants: queue.Queue = queue.Queue()  # a learner's credits: 4 batches ahead, one more per batch
            grants.put(replay_pb2.SampleRequest(table="load", batch_size=64, credits=4, timeout_seconds=5))

            def requests(grants=grants):
                while (request := grants.get()) is not None:
                    yield request

            call = stub.Sample(requests(), timeout=max(1.0, stop_at - time.monotonic()))
            try:
                for response in call:
                    second = int(time.time() - start)
                    with lock:
                        sampled[min(second, len(sampled) - 1)] += len(response.keys)
                    if response.end_of_batch:
                        grants.put(replay_pb2.SampleRequest(credits=1))
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:  # the end of the run
                    with lock:
                        errors.append(f"sample: {error.code().name}: {error.details()}")
            finally:
                grants.put(None)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    threads += [threading.Thread(target=sample) for _ in range(samplers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.close()
    out.send({"start": start, "acked": acked.tolist(), "sampled": sampled.tolist(), "latencies": latencies,
              "errors": errors})  # fmt: skip


def parameter_watchers(address: str, watchers: int, stop, out) -> None:
    """One client process: ``watchers`` threads, each following new versions and downloading each.

    Sends ``"ready"`` once every watcher is connected (publishing starts then), and its
    figures once ``stop`` is set."""
    from rlrings.clients.parameter import ParameterClient

    lock = threading.Lock()
    delays: list[tuple[float, float]] = []  # (publish time, seconds until this watcher had the bytes)
    seen: list[set[int]] = [set() for _ in range(watchers)]
    errors: list[str] = []
    calls: list = []
    connected = threading.Barrier(watchers + 1)

    def watch(i: int) -> None:
        with ParameterClient(address, max_message_bytes=64 << 20) as client:
            client.list()  # connected before publishing starts
            call = client.watch(send_current=False)
            with lock:
                calls.append(call)
            connected.wait()
            try:
                for notice in call:
                    header, data = client.fetch(version=notice.version, tag="")
                    published = header.created.ToDatetime().timestamp()
                    with lock:
                        delays.append((published, time.time() - published))
                        seen[i].add(notice.version)
                    if len(data) != header.total_bytes:
                        raise ValueError("short download")
            except Exception as error:  # noqa: BLE001 - counted and reported
                if not stop.is_set():
                    with lock:
                        errors.append(f"watch: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=watch, args=(i,)) for i in range(watchers)]
    for thread in threads:
        thread.start()
    connected.wait()
    out.send("ready")
    stop.wait()
    with lock:
        for call in calls:
            call.cancel()
    for thread in threads:
        thread.join()
    out.send({"delays": delays, "seen": [sorted(s) for s in seen], "errors": errors})


# -- the runs ----------------------------------------------------------------------


def start(module: str, config: dict, work: Path) -> tuple[subprocess.Popen, str]:
    path = work / f"{module.rsplit('.', 1)[-1]}.yaml"
    path.write_text(json.dumps(config))
    log = open(work / f"{path.stem}.log", "w")  # noqa: SIM115 - the child keeps its own descriptor
    server = subprocess.Popen([sys.executable, "-m", module, "--config", str(path)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    from rlrings.rpc.client import ServiceClient

    address = f"127.0.0.1:{config['port']}"
    with ServiceClient(address) as client:
        client.wait_ready(60)
    return server, address


def watch_memory(pid: int, seconds: float, progress: Progress, label: str) -> list[tuple[float, float]]:
    """(seconds since start, resident MiB) of ``pid`` every second, with a progress bar."""
    process, samples, begin = psutil.Process(pid), [], time.monotonic()
    task = progress.add_task(label, total=seconds)
    while (elapsed := time.monotonic() - begin) < seconds:
        samples.append((elapsed, process.memory_info().rss / 2**20))
        progress.update(task, completed=elapsed)
        time.sleep(1.0)
    progress.update(task, completed=seconds)
    return samples


def memory_figures(samples: list[tuple[float, float]], warm_up: float, window: float = 60.0) -> dict:
    """Resident memory at start, in the minute after warm-up and in the last minute.

    A server's memory swings with the messages in flight (64 watchers downloading a
    1 MiB version at once hold 64 MiB for a moment), so a window is summed up by its
    lower quartile, the level the server returns to between bursts, which a leak
    raises; growth compares those. The windows' medians and the peak are reported too."""
    end = samples[-1][0]
    early = [mib for t, mib in samples if warm_up <= t < warm_up + window] or [samples[-1][1]]
    late = [mib for t, mib in samples if t >= max(warm_up, end - window)] or [samples[-1][1]]
    floor_early, floor_late = np.percentile(early, 25), np.percentile(late, 25)
    return {"start_mib": samples[0][1], "after_warm_up_mib": float(floor_early), "end_mib": float(floor_late),
            "growth_after_warm_up": float(floor_late / floor_early - 1),
            "median_growth_after_warm_up": float(np.median(late) / np.median(early) - 1),
            "peak_mib": max(mib for _, mib in samples)}  # fmt: skip


def idle_streams(address: str, count: int, stop, out) -> None:
    """Holds ``count`` streams open and silent, as an attacker or a crowd of stalled clients
    would: half health watches, half replay inserts that never send, no token, on 4 connections."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from rlrings.v1 import replay_pb2_grpc

    def silent():
        stop.wait()
        yield from ()

    channels = [grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(4)]
    calls = []
    for i in range(count):
        channel = channels[i % len(channels)]
        if i % 2:
            calls.append(replay_pb2_grpc.ReplayServiceStub(channel).Insert(silent()))
        else:
            calls.append(health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest()))
    out.send("ready")
    stop.wait()
    for call in calls:
        call.cancel()
    for channel in channels:
        channel.close()


def probe_info(address: str, stop: threading.Event, latencies: list[float], errors: list[str]) -> None:
    """An operator's Info call every 100 ms, timed, while the load runs."""
    from rlrings.clients.replay import ReplayClient

    with ReplayClient(address) as client:
        while not stop.wait(0.1):
            begin = time.perf_counter()
            try:
                client.info(["load"])
                latencies.append(time.perf_counter() - begin)
            except Exception as error:  # counted
                errors.append(f"Info: {error}"[:200])


def run_replay(seconds: float, writers: int, samplers: int, profile: str, window: int, work: Path,
               progress: Progress, idle: int = 200) -> tuple[dict, np.ndarray]:  # fmt: skip
    spec = PROFILES[profile]
    config = {"port": free_port(), "metrics_port": free_port(),
              "snapshot_dir": str(work / "replay"), "snapshot_interval_seconds": 0,
              "tables": [{"name": "load", "signature": spec["signature"], "max_size": spec["max_size"],
                          "selector": "uniform"}]}  # fmt: skip
    server, address = start("rlrings.services.replay", config, work)
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    idle_stop = context.Event()
    info_stop, info_latencies, info_errors = threading.Event(), [], []
    prober = threading.Thread(target=probe_info, args=(address, info_stop, info_latencies, info_errors))
    try:
        if idle:
            receive, send = context.Pipe(duplex=False)
            holder = context.Process(target=idle_streams, args=(address, idle, idle_stop, send))
            holder.start()
            processes.append(holder)
            if not receive.poll(120) or receive.recv() != "ready":
                raise RuntimeError("the idle streams were not open within 120 s")
        prober.start()
        for i in range(CLIENT_PROCESSES):
            mine_w = writers // CLIENT_PROCESSES + (i < writers % CLIENT_PROCESSES)
            mine_s = samplers // CLIENT_PROCESSES + (i < samplers % CLIENT_PROCESSES)
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=replay_clients,
                                      args=(address, mine_w, mine_s, seconds, profile, window, send))  # fmt: skip
            process.start()
            pipes.append(receive)
            processes.append(process)
        memory = watch_memory(server.pid, seconds, progress, f"replay: {writers} writers, {samplers} samplers")
        reports = [pipe.recv() for pipe in pipes]
    finally:
        info_stop.set()
        if prober.is_alive():
            prober.join(30)
        idle_stop.set()
        for process in processes:
            process.join(30)
        server.terminate()
        server.wait(30)
    base = min(r["start"] for r in reports)
    length = int(seconds) + 2
    acked, sampled = np.zeros(length, np.int64), np.zeros(length, np.int64)
    for report in reports:
        shift = int(round(report["start"] - base))
        acked[shift:] += np.asarray(report["acked"])[: length - shift]
        sampled[shift:] += np.asarray(report["sampled"])[: length - shift]
    latencies = np.asarray([x for r in reports for x in r["latencies"]])
    errors = [e for r in reports for e in r["errors"]] + info_errors
    whole = slice(0, int(seconds))
    info = np.asarray(info_latencies) * 1000
    result = {
        "profile": profile,
        "item_bytes": spec["item_bytes"],
        "writers": writers,
        "samplers": samplers,
        "idle_streams": idle,
        "info_latency_ms": {q: float(np.percentile(info, p)) for q, p in (("p50", 50), ("p99", 99))}
        if info.size
        else {},  # fmt: skip
        "window": window,
        "seconds": seconds,
        "errors": len(errors),
        "error_examples": errors[:5],
        "chunks_acknowledged": int(latencies.size),
        "insert_latency_ms": {q: float(np.percentile(latencies, p) * 1000) for q, p in (("p50", 50), ("p99", 99))},
        "inserted_items_per_second": float(acked[whole].mean()),
        "sampled_items_per_second": float(sampled[whole].mean()),
        "inserted_per_second_series": acked[whole].tolist(),
        "sampled_per_second_series": sampled[whole].tolist(),
        "memory": memory_figures(memory, WARM_UP_SECONDS),
        "memory_series": memory,
    }
    return result, latencies


def run_parameter(seconds: float, watchers: int, model_bytes: int, work: Path, progress: Progress) -> dict:
    config = {"port": free_port(), "metrics_port": free_port(),
              "directory": str(work / "weights"), "keep_versions": 5, "max_message_bytes": 64 << 20}  # fmt: skip
    server, address = start("rlrings.services.parameter", config, work)
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    published: list[int] = []
    stop = threading.Event()

    def publish() -> None:
        from rlrings.clients.parameter import ParameterClient
        from rlrings.v1 import spaces_pb2

        rng = np.random.default_rng(0)
        model = spaces_pb2.ModelSpec(architecture="mlp", env_id="load")
        with ParameterClient(address, max_message_bytes=64 << 20) as client:
            next_at = time.monotonic()
            while not stop.wait(max(0.0, next_at - time.monotonic())):
                published.append(client.publish(rng.bytes(model_bytes), model))
                next_at += 1.0

    watchers_stop = context.Event()
    try:
        for i in range(CLIENT_PROCESSES):
            receive, send = context.Pipe(duplex=False)
            mine = watchers // CLIENT_PROCESSES + (i < watchers % CLIENT_PROCESSES)
            process = context.Process(target=parameter_watchers, args=(address, mine, watchers_stop, send))
            process.start()
            pipes.append(receive)
            processes.append(process)
        for pipe in pipes:  # every watcher connected
            if not pipe.poll(120) or pipe.recv() != "ready":
                raise RuntimeError("the watcher processes did not connect within 120 s")
        publisher = threading.Thread(target=publish)
        publisher.start()
        memory = watch_memory(server.pid, seconds, progress, f"parameter: {watchers} watchers, 1 version/s")
        stop.set()
        publisher.join()
        time.sleep(3.0)  # the last versions reach the watchers
        watchers_stop.set()
        reports = [pipe.recv() for pipe in pipes]
    finally:
        stop.set()
        watchers_stop.set()
        for process in processes:
            process.join(30)
        server.terminate()
        server.wait(30)
    delays = np.asarray([d for r in reports for _, d in r["delays"]])
    # every watcher was connected before the first version, and was given 3 s for the last
    complete = sum(set(published) <= set(seen) for r in reports for seen in r["seen"])
    return {
        "watchers": watchers,
        "model_bytes": model_bytes,
        "seconds": seconds,
        "versions_published": len(published),
        "errors": sum(len(r["errors"]) for r in reports),
        "error_examples": [e for r in reports for e in r["errors"]][:5],
        "watchers_that_saw_every_version": complete,
        "delivery_seconds": {q: float(np.percentile(delays, p)) for q, p in (("p50", 50), ("p99", 99))}
        if delays.size
        else {},  # fmt: skip
        "downloads": int(delays.size),
        "memory": memory_figures(memory, WARM_UP_SECONDS),
        "memory_series": memory,
    }


def run_viewer(gifs: int, work: Path, progress: Progress) -> dict:
    """The viewer under ``gifs`` GIF requests at once (three episode counts, so three renderings of
    up to three 500-step episodes,
    and a new policy version in the middle, so renderings are not all served from the cache)
    while one page watches: the viewer's peak resident memory, and the frames per second the
    watching page got before and while the GIFs were made."""
    import asyncio

    import aiohttp

    from rlrings.clients.parameter import ParameterClient
    from rlrings.core import experience
    from rlrings.core.models import ModelSpec, build_model, weights_to_bytes
    from rlrings.envs import env_spec
    from rlrings.rpc import wire

    spec = env_spec(GIF_ENV)
    replay, replay_address = start("rlrings.services.replay", {
        "port": free_port(), "metrics_port": free_port(), "snapshot_dir": str(work / "viewer-replay"),
        "tables": [experience.demonstrations_table(spec)]}, work)  # fmt: skip
    parameter, parameter_address = start("rlrings.services.parameter", {
        "port": free_port(), "metrics_port": free_port(), "directory": str(work / "viewer-weights")}, work)  # fmt: skip
    model_spec = ModelSpec.for_env(spec, "impala")

    def publish() -> None:
        with ParameterClient(parameter_address) as client:
            client.publish(weights_to_bytes(build_model(model_spec)), wire.model_spec_to_proto(model_spec))

    publish()
    http_port = free_port()
    viewer, _ = start("rlrings.services.viewer", {
        "port": free_port(), "metrics_port": free_port(), "http_port": http_port, "replay_address": replay_address,
        "parameter_address": parameter_address, "env": GIF_ENV}, work)  # fmt: skip
    process = psutil.Process(viewer.pid)
    base = f"http://127.0.0.1:{http_port}"
    task = progress.add_task(f"viewer: {gifs} GIF requests beside a watching page", total=None)

    async def measure() -> dict:
        peak, frames = [process.memory_info().rss], []

        async def sample_memory(stop: asyncio.Event) -> None:
            while not stop.is_set():
                peak.append(process.memory_info().rss)
                await asyncio.sleep(0.2)

        async with aiohttp.ClientSession() as session, session.ws_connect(f"{base}/ws?mode=watch") as ws:
            stop = asyncio.Event()
            watcher = asyncio.create_task(_count_frames(ws, frames, stop))
            memory = asyncio.create_task(sample_memory(stop))
            await asyncio.sleep(5.0)
            before = len(frames) / 5.0
            started = time.monotonic()

            async def gif(i: int) -> int:
                if i == gifs // 2:
                    await asyncio.get_running_loop().run_in_executor(None, publish)  # a new version mid-way
                async with session.get(f"{base}/api/video.gif?episodes={1 + i % 3}") as response:
                    return response.status, len(await response.read())

            counted = len(frames)
            answers = await asyncio.gather(*[gif(i) for i in range(gifs)])
            seconds = time.monotonic() - started
            during = (len(frames) - counted) / seconds
            stop.set()
            await asyncio.gather(watcher, memory, return_exceptions=True)
        return {"gifs": gifs, "statuses": sorted({a[0] for a in answers}), "gif_bytes": [a[1] for a in answers],
                "seconds_for_all": seconds, "watch_fps_before": before, "watch_fps_during": during,
                "rss_start_mib": peak[0] / 2**20, "rss_peak_mib": max(peak) / 2**20}  # fmt: skip

    try:
        return asyncio.run(measure())
    finally:
        progress.update(task, completed=1, total=1)
        for server in (viewer, parameter, replay):
            server.terminate()
            server.wait(30)


async def _count_frames(ws, frames: list, stop) -> None:
    async for message in ws:
        if stop.is_set():
            return
        if message.type == 2:  # aiohttp.WSMsgType.BINARY: one frame's image
            frames.append(time.monotonic())


def plot(results: dict, latencies: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(16, 4.2), dpi=100)
    replay, parameter = results.get("replay"), results.get("parameter")
    if replay:
        axes[0].plot(replay["inserted_per_second_series"], label="inserted items/s")
        axes[0].plot(replay["sampled_per_second_series"], label="sampled items/s")
        axes[0].set_title(f"replay: {replay['writers']} writers, {replay['samplers']} samplers ({replay['profile']})")
        axes[0].set_xlabel("seconds")
        axes[0].legend()
    for result, name in ((replay, "replay"), (parameter, "parameter")):
        if result:
            t, mib = zip(*result["memory_series"])
            axes[1].plot(t, mib, label=name)
    axes[1].axvline(WARM_UP_SECONDS, color="grey", linestyle="--", label="end of warm-up")
    axes[1].set_title("server resident memory (MiB)")
    axes[1].set_xlabel("seconds")
    axes[1].legend()
    if replay:
        axes[2].set_title("insert latency (chunk sent to acknowledged)")
        axes[2].set_xlabel("ms")
        axes[2].hist(latencies * 1000, bins=100, log=True)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0, help="length of each run (default 300)")
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--samplers", type=int, default=4)
    parser.add_argument("--idle-streams", type=int, default=200, help="silent streams held open (default 200)")
    parser.add_argument("--window", type=int, default=4, help="chunks a writer may have unacknowledged (default 4)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="transitions")
    parser.add_argument("--watchers", type=int, default=64)
    parser.add_argument("--model-bytes", type=int, default=1 << 20, help="size of each published version")
    parser.add_argument("--gifs", type=int, default=8, help="GIF requests at once on the viewer (default 8)")
    parser.add_argument("--only", choices=["replay", "parameter", "viewer"], help="run one of the three")
    parser.add_argument("--out", type=Path, default=RESULTS / "load.json")
    args = parser.parse_args(argv)
    console = Console()
    results: dict = {"cpus": os.cpu_count()}
    latencies = np.zeros(0)
    with tempfile.TemporaryDirectory() as work, Progress(console=console) as progress:
        if args.only in (None, "replay"):
            replay_args = (args.seconds, args.writers, args.samplers, args.profile, args.window, Path(work), progress,
                           args.idle_streams)  # fmt: skip
            results["replay"], latencies = run_replay(*replay_args)
        if args.only in (None, "parameter"):
            results["parameter"] = run_parameter(args.seconds, args.watchers, args.model_bytes, Path(work), progress)
        if args.only in (None, "viewer"):
            results["viewer"] = run_viewer(args.gifs, Path(work), progress)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_path = args.out.with_suffix(".png")
    plot(results, latencies, plot_path)
    args.out.write_text(json.dumps(results, indent=2))
    report(results, console)
    console.print(f"results: {args.out}, plot: {plot_path}")
    failed = sum(results[k]["errors"] for k in ("replay", "parameter") if k in results)
    viewer = results.get("viewer")
    if viewer is not None and (viewer["statuses"] != [200] or viewer["rss_peak_mib"] >= 1024
                               or viewer["watch_fps_during"] <= 5):  # fmt: skip
        failed += 1
    return 1 if failed else 0


def memory_row(m: dict) -> str:
    return (f"{m['start_mib']:.0f} / {m['after_warm_up_mib']:.0f} / {m['end_mib']:.0f} MiB "
            f"({m['growth_after_warm_up']:+.1%} after warm-up; medians {m['median_growth_after_warm_up']:+.1%}; "
            f"peak {m['peak_mib']:.0f} MiB)")  # fmt: skip


def report(results: dict, console: Console) -> None:
    table = Table(title="load test", show_header=False)
    if replay := results.get("replay"):
        m = replay["memory"]
        table.add_row("replay errors", str(replay["errors"]))
        table.add_row("insert latency p50 / p99", f"{replay['insert_latency_ms']['p50']:.1f} / "
                      f"{replay['insert_latency_ms']['p99']:.1f} ms")  # fmt: skip
        table.add_row("inserted / sampled items/s", f"{replay['inserted_items_per_second']:,.0f} / "
                      f"{replay['sampled_items_per_second']:,.0f}")  # fmt: skip
        if info := replay.get("info_latency_ms"):
            table.add_row(f"admin Info p50 / p99 beside {replay['idle_streams']} idle streams",
                          f"{info['p50']:.1f} / {info['p99']:.1f} ms")  # fmt: skip
        table.add_row("replay memory start / warm / end", memory_row(m))
    if parameter := results.get("parameter"):
        m = parameter["memory"]
        delivery = parameter["delivery_seconds"]
        table.add_row("parameter errors", str(parameter["errors"]))
        complete = parameter["watchers_that_saw_every_version"]
        table.add_row("versions; watchers that missed none",
                      f"{parameter['versions_published']}; {complete} of {parameter['watchers']}")  # fmt: skip
        if delivery:
            table.add_row(
                "version to watcher p50 / p99", f"{delivery['p50'] * 1000:.0f} / {delivery['p99'] * 1000:.0f} ms"
            )
        table.add_row("parameter memory start / warm / end", memory_row(m))
    if viewer := results.get("viewer"):
        table.add_row(f"viewer: {viewer['gifs']} GIFs at once, statuses", f"{viewer['statuses']}, "
                      f"all in {viewer['seconds_for_all']:.1f} s")  # fmt: skip
        table.add_row("viewer memory start / peak", f"{viewer['rss_start_mib']:.0f} / {viewer['rss_peak_mib']:.0f} MiB")
        table.add_row("watching page fps before / during", f"{viewer['watch_fps_before']:.1f} / "
                      f"{viewer['watch_fps_during']:.1f}")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())

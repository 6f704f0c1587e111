"""Central inference against local, side by side in one run, on whatever machine runs it.

1. ``Act`` on loopback: an inference service (a process of its own, on the device it finds:
   the GPU where there is one) answers 1, 8 and 64 concurrent streams, each sending batches of
   ``--obs-per-request`` Atari frame stacks (LZ4, as actors send them) as fast as it is answered;
   beside it, the same network run locally by as many threads of one process. Per request: the
   latency's p50 and p99; overall, observations answered per second.
2. One actor against its envs' ceiling: the raw rate of an actor's own preprocessed Pong envs
   stepped with random actions in one process (the ceiling), then ``rlrings actor`` with its
   policy local (one group; two groups, the pass on a thread of its own) and central (two and
   three groups), each writing to a real replay whose queue a drain thread empties as a learner
   would (sampling, not training), for ``--seconds`` each: frames per second and the ratio to
   the ceiling.

Results go to bench/results/inference.json and inference.png.

    python -m bench.inference [--seconds 30] [--game Pong] [--envs 8] [--streams 1,8,64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.atari import random_frames_per_second

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def _publish(parameter_address: str, env_id: str, algorithm: str = "appo"):
    import torch

    from rlrings import algorithms
    from rlrings.clients.parameter import ParameterClient
    from rlrings.core.models import build_model, weights_to_bytes
    from rlrings.envs import env_spec
    from rlrings.rpc import wire

    torch.manual_seed(0)
    spec = algorithms.get(algorithm).model_spec(env_spec(env_id))
    network = build_model(spec).eval()
    with ParameterClient(parameter_address).wait_ready(30) as client:
        client.publish(weights_to_bytes(network), wire.model_spec_to_proto(spec))
    return spec, network


def _frames(count: int, seed: int) -> np.ndarray:
    """Frame stacks with an Atari frame's redundancy (a flat background, a few objects)."""
    rng = np.random.default_rng(seed)
    frames = np.full((count, 84, 84, 4), 87, np.uint8)
    for i in range(count):
        for _ in range(3):
            y, x = rng.integers(0, 78, 2)
            frames[i, y : y + 6, x : x + 2] = 236
    return frames


def _percentiles(latencies: list[float]) -> dict:
    values = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}


def act_latency(address: str, network, streams: int, per_request: int, seconds: float) -> dict:
    """Central and local passes for ``streams`` callers at once."""
    import torch

    from rlrings.clients.inference import InferenceClient

    torch.set_num_threads(1)  # each local caller a thread of its own, as each actor would have
    with InferenceClient(address).wait_ready(30) as client:
        return {
            "central": _callers(lambda: _central_caller(client), streams, per_request, seconds),
            "local": _callers(lambda: _local_caller(network), streams, per_request, seconds),
        }


def _central_caller(client):
    stream = client.stream()

    def ask(frames):
        stream.send(frames)
        stream.receive()

    return ask, stream.close


def _local_caller(network):
    import torch

    def ask(frames):
        with torch.inference_mode():
            network(torch.from_numpy(frames))

    return ask, lambda: None


def _callers(make, streams: int, per_request: int, seconds: float) -> dict:
    """``streams`` threads, each asking with its own caller from ``make`` as fast as it is answered."""
    latencies: list[list[float]] = [[] for _ in range(streams)]
    stop = threading.Event()

    def run(index: int) -> None:
        frames, own = _frames(per_request, index), latencies[index]
        ask, close = make()
        try:
            while not stop.is_set():
                began = time.perf_counter()
                ask(frames)
                own.append(time.perf_counter() - began)
        finally:
            close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(streams)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    elapsed = time.perf_counter() - began
    every = [latency for own in latencies for latency in own]
    return {
        **_percentiles(every),
        "observations_per_second": len(every) * per_request / elapsed,
        "requests": len(every),
    }


def drain(replay_address: str, table: str, stop: threading.Event) -> None:
    """Empties the queue as a learner would, without training."""
    from rlrings.clients.replay import ReplayClient

    with (
        ReplayClient(replay_address).wait_ready(60) as client,
        client.sample(table, batch_size=4, timeout=0) as sampler,
    ):
        for _ in sampler:
            if stop.is_set():
                return


def actor_rate(env_id: str, envs: int, groups: int, inference_address: str | None, replay_address: str,
               parameter_address: str, work: Path, seconds: float) -> dict:  # fmt: skip
    """One ``rlrings actor`` for ``seconds`` after its first steps: frames per second."""
    import grpc

    from rlrings.envs import env_spec
    from rlrings.ops.processes import ServiceProcess, free_port
    from rlrings.v1 import actor_pb2, actor_pb2_grpc

    config = {"port": free_port(), "metrics_port": free_port(), "replay_address": replay_address,
              "parameter_address": parameter_address, "env": env_id, "num_envs": envs, "env_groups": groups,
              "algorithm": {"name": "appo"}}  # fmt: skip
    if inference_address:
        config["inference_address"] = inference_address
    actor = ServiceProcess(f"actor-{groups}-{'central' if inference_address else 'local'}", "rlrings.services.actor",
                           config, work).start()  # fmt: skip
    channel = grpc.insecure_channel(actor.address)
    stub = actor_pb2_grpc.ActorServiceStub(channel)
    try:
        deadline = time.monotonic() + 120
        while True:  # past start-up: the first weights, the first steps
            try:
                status = stub.GetStatus(actor_pb2.GetActorStatusRequest(), timeout=5)
                if status.env_steps > 0:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline or not actor.alive():
                raise RuntimeError(f"{actor.name} did not start: {actor.log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        first, began = status.env_steps, time.perf_counter()
        time.sleep(seconds)
        last = stub.GetStatus(actor_pb2.GetActorStatusRequest(), timeout=5).env_steps
        steps_per_second = (last - first) / (time.perf_counter() - began)
    finally:
        channel.close()
        actor.stop()
    return {"frames_per_second": env_spec(env_id).frame_skip * steps_per_second}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, rates) = plt.subplots(1, 2, figsize=(12, 4))
    streams = sorted(int(s) for s in result["act"])
    for where, color in (("central", "#1f77b4"), ("local", "#999")):
        latency.plot(streams, [result["act"][str(s)][where]["p50_ms"] for s in streams], "o-", color=color,
                     label=f"{where} p50")  # fmt: skip
        latency.plot(streams, [result["act"][str(s)][where]["p99_ms"] for s in streams], "o--", color=color,
                     label=f"{where} p99")  # fmt: skip
    latency.set_xscale("log", base=2)
    latency.set_xlabel("concurrent callers")
    latency.set_ylabel(f"ms per request of {result['obs_per_request']} frame stacks")
    latency.set_title(f"Act on loopback ({result['device']})")
    latency.legend(fontsize="small")
    names = ["ceiling (envs alone)", *result["actor"]]
    values = [result["ceiling_frames_per_second"], *(r["frames_per_second"] for r in result["actor"].values())]
    rates.barh(names, values, color=["#999"] + ["#1f77b4"] * len(result["actor"]))
    rates.set_xlabel("frames per second, one actor")
    rates.set_title(f"{result['env']}: one actor of {result['envs']} envs against its ceiling")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="each actor measurement, after start-up")
    parser.add_argument("--act-seconds", type=float, default=10.0, help="each Act latency measurement")
    parser.add_argument("--game", default="Pong")
    parser.add_argument("--envs", type=int, default=8, help="envs of the actor")
    parser.add_argument("--streams", default="1,8,64")
    parser.add_argument("--obs-per-request", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS / "inference.json")
    args = parser.parse_args(argv)
    from rlrings import algorithms
    from rlrings.core import experience
    from rlrings.core.devices import resolve_device
    from rlrings.core.shape import MeshShape
    from rlrings.envs import env_spec
    from rlrings.ops.processes import ServiceProcess, free_port

    env_id = f"ALE/{args.game}-v5"
    result = {"env": env_id, "envs": args.envs, "obs_per_request": args.obs_per_request,
              "device": str(resolve_device("auto")), "act": {}, "actor": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        spec = env_spec(env_id)
        tables = experience.mesh_tables(algorithms.get("appo").config(), spec, MeshShape(actors=1,
                                        envs_per_actor=args.envs))  # fmt: skip

        def ports() -> dict:
            return {"port": free_port(), "metrics_port": free_port()}

        replay_config = {**ports(), "snapshot_dir": str(work / "replay"), "tables": tables}
        replay = ServiceProcess("replay", "rlrings.services.replay", replay_config, work).start()
        parameter = ServiceProcess("parameter", "rlrings.services.parameter",
                                   {**ports(), "directory": str(work / "weights")}, work).start()  # fmt: skip
        inference = ServiceProcess("inference", "rlrings.services.inference",
                                   {**ports(), "parameter_address": parameter.address}, work)  # fmt: skip
        stop = threading.Event()
        try:
            _, network = _publish(parameter.address, env_id)
            inference.start()
            for streams in (int(s) for s in args.streams.split(",")):
                print(f"Act, {streams} callers ...", flush=True)
                result["act"][str(streams)] = act_latency(inference.address, network, streams, args.obs_per_request,
                                                          args.act_seconds)  # fmt: skip
                print(result["act"][str(streams)], flush=True)
            print("ceiling ...", flush=True)
            result["ceiling_frames_per_second"] = random_frames_per_second(env_id, args.envs, min(args.seconds, 20.0))
            print(result["ceiling_frames_per_second"], flush=True)
            threading.Thread(target=drain, args=(replay.address, "experience", stop), daemon=True).start()
            for name, groups, central in (("local, 1 group", 1, False), ("local, 2 groups", 2, False),
                                          ("central, 2 groups", 2, True), ("central, 3 groups", 3, True)):  # fmt: skip
                print(f"actor, {name} ...", flush=True)
                run = actor_rate(env_id, args.envs, groups, inference.address if central else None, replay.address,
                                 parameter.address, work, args.seconds)  # fmt: skip
                run["ratio_to_ceiling"] = run["frames_per_second"] / result["ceiling_frames_per_second"]
                result["actor"][name] = run
                print(run, flush=True)
        finally:
            stop.set()
            for service in (inference, parameter, replay):
                service.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    print(f"results: {args.out}, plot: {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

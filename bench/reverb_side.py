"""The Reverb side of the replay benchmark; runs in .venv-reverb.

``python bench/reverb_side.py --items N --batch B --batches M`` starts a Reverb
server process, inserts N items through a trajectory writer from a writer
process, samples through the Python client and through the batched
TrajectoryDataset from a sampler process, and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from items import FRAME_SHAPE, ITEM_BYTES, chunks  # noqa: E402

TABLE = "bench"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def serve(port: int, max_size: int) -> None:
    import reverb
    import tensorflow as tf

    signature = {
        # Items are one-step trajectories, like rlrings' sequence_length=1 items.
        "obs": tf.TensorSpec([1, *FRAME_SHAPE], tf.uint8),
        "reward": tf.TensorSpec([1], tf.float32),
        "action": tf.TensorSpec([1], tf.int32),
    }
    table = reverb.Table(
        TABLE,
        sampler=reverb.selectors.Uniform(),
        remover=reverb.selectors.Fifo(),
        max_size=max_size,
        rate_limiter=reverb.rate_limiters.MinSize(1),
        signature=signature,
    )
    server = reverb.Server(tables=[table], port=port)
    print("ready", flush=True)
    server.wait()


def write(address: str, items: int, chunk_length: int) -> dict:
    import reverb

    data = chunks(items, chunk_length)
    client = reverb.Client(address)
    start = time.perf_counter()
    with client.trajectory_writer(num_keep_alive_refs=chunk_length) as writer:
        for chunk in data:
            for i in range(len(chunk["obs"])):
                writer.append({name: column[i] for name, column in chunk.items()})
                writer.create_item(TABLE, 1.0, {name: writer.history[name][-1:] for name in chunk})
        writer.flush()
    seconds = time.perf_counter() - start
    return {"items": items, "seconds": seconds}


def sample_python(address: str, samples: int) -> dict:
    import reverb

    client = reverb.Client(address)
    start = time.perf_counter()
    count = sum(1 for _ in client.sample(TABLE, num_samples=samples))
    return {"items": count, "seconds": time.perf_counter() - start}


def sample_dataset(address: str, batch: int, batches: int) -> dict:
    import reverb

    dataset = reverb.TrajectoryDataset.from_table_signature(
        server_address=address, table=TABLE, max_in_flight_samples_per_worker=2 * batch
    ).batch(batch, drop_remainder=True)
    iterator = iter(dataset)
    next(iterator)  # builds the pipeline; not counted
    start = time.perf_counter()
    count = 0
    for _ in range(batches):
        sample = next(iterator)
        count += int(sample.data["obs"].shape[0])
    return {"items": count, "seconds": time.perf_counter() - start}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def role(*args: str) -> dict:
    """Runs one role in its own process and returns its JSON answer."""
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", default="main")
    parser.add_argument("--address", default="")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    if args.role == "server":
        return serve(args.port, args.items)
    if args.role == "write":
        return print(json.dumps(write(args.address, args.items, args.chunk)))
    if args.role == "sample-python":
        return print(json.dumps(sample_python(args.address, args.batch * args.batches)))
    if args.role == "sample-dataset":
        return print(json.dumps(sample_dataset(args.address, args.batch, args.batches)))

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--role", "server", "--port", str(port), "--items", str(args.items)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline().strip() == "ready"
        address = f"localhost:{port}"
        time.sleep(1.0)
        rss_empty = rss_bytes(server.pid)
        common = ["--address", address, "--batch", str(args.batch), "--batches", str(args.batches)]
        insert = role("--role", "write", "--items", str(args.items), "--chunk", str(args.chunk), *common)
        rss_full = rss_bytes(server.pid)
        python = role("--role", "sample-python", *common)
        dataset = role("--role", "sample-dataset", *common)
    finally:
        server.kill()
        server.wait()
    print(
        json.dumps(
            {
                "insert": insert,
                "sample_python": python,
                "sample_dataset": dataset,
                "memory": {"rss_empty": rss_empty, "rss_full": rss_full, "items": args.items, "item_bytes": ITEM_BYTES},
            }
        )
    )


if __name__ == "__main__":
    main()

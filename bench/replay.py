"""Replay throughput and memory, rlrings against DeepMind Reverb, in one run.

Both sides get the same items (bench/items.py), a server process, a writer
process and a sampler process on loopback. Reported: insert and sample
items/s and MB/s, the server's resident memory per million stored items
against the raw bytes they hold, and rlrings/Reverb ratios. Results go to
bench/results/replay.json.

    python -m bench.replay [--items 20000] [--batch 256] [--batches 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from bench.items import ITEM_BYTES, chunks
from rlrings.ops.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
REVERB_PYTHON = ROOT / ".venv-reverb" / "bin" / "python"
RESULTS = ROOT / "bench" / "results" / "replay.json"
SIGNATURE = {
    "obs": {"dtype": "uint8", "shape": [64, 64, 3]},
    "reward": {"dtype": "float32", "shape": []},
    "action": {"dtype": "int32", "shape": []},
}


def write(address: str, items: int, chunk_length: int) -> dict:
    from rlrings.clients.replay import ReplayClient

    data = chunks(items, chunk_length)
    with ReplayClient(address).wait_ready(30) as client:
        start = time.perf_counter()
        with client.writer("bench", chunk_length=chunk_length, max_in_flight=8) as writer:
            for chunk in data:
                writer.write_chunk(chunk)
            writer.flush()
        return {"items": writer.acked_items, "seconds": time.perf_counter() - start}


def sample(address: str, batch: int, batches: int) -> dict:
    from rlrings.clients.replay import ReplayClient

    with (
        ReplayClient(address).wait_ready(30) as client,
        client.sample("bench", batch_size=batch, max_in_flight=4) as sampler,
    ):
        next(sampler)  # opens the stream; not counted
        start = time.perf_counter()
        count = sum(len(next(sampler)) for _ in range(batches))
        return {"items": count, "seconds": time.perf_counter() - start}


def role(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "bench.replay", *args], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_rlrings(items: int, chunk: int, batch: int, batches: int, store: str = "memory") -> dict:
    """One server with ``store`` memory, or embedded (every chunk logged before its ack; no
    periodic snapshot during the run)."""
    port = free_port()
    tables = json.dumps([{"name": "bench", "signature": SIGNATURE, "max_size": items, "selector": "uniform"}])
    directory = tempfile.TemporaryDirectory()
    server = subprocess.Popen(
        [sys.executable, "-m", "rlrings.services.replay", "--port", str(port), "--metrics-port", "0", "--store", store,
         "--snapshot-dir", directory.name, "--snapshot-interval-seconds", "0", "--tables", tables],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{port}"
        from rlrings.clients.replay import ReplayClient

        with ReplayClient(address) as client:
            client.wait_ready(60)
        rss_empty = psutil.Process(server.pid).memory_info().rss
        common = ["--address", address, "--batch", str(batch), "--batches", str(batches)]
        insert = role("--role", "write", "--items", str(items), "--chunk", str(chunk), *common)
        rss_full = psutil.Process(server.pid).memory_info().rss
        sampled = role("--role", "sample", *common)
    finally:
        server.terminate()
        server.wait(30)
        directory.cleanup()
    return {
        "insert": insert,
        "sample": sampled,
        "memory": {"rss_empty": rss_empty, "rss_full": rss_full, "items": items, "item_bytes": ITEM_BYTES},
    }


def measure_reverb(items: int, chunk: int, batch: int, batches: int) -> dict | None:
    if not REVERB_PYTHON.exists():
        return None
    args = ["--items", str(items), "--chunk", str(chunk), "--batch", str(batch), "--batches", str(batches)]
    result = subprocess.run(
        [str(REVERB_PYTHON), str(ROOT / "bench" / "reverb_side.py"), *args], capture_output=True, text=True
    )
    if result.returncode != 0:
        print(result.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def rates(measure: dict) -> dict:
    per_second = measure["items"] / measure["seconds"]
    return {"items_per_s": per_second, "mb_per_s": per_second * ITEM_BYTES / 1e6}


def memory(measure: dict) -> dict:
    grown = measure["rss_full"] - measure["rss_empty"]
    per_million = grown / measure["items"] * 1e6
    raw = ITEM_BYTES * 1e6
    return {
        "rss_gib_per_million": per_million / 2**30,
        "raw_gib_per_million": raw / 2**30,
        "rss_over_raw": per_million / raw,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", default="main", help=argparse.SUPPRESS)
    parser.add_argument("--address", default="", help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, default=20_000, help="items inserted (and table size)")
    parser.add_argument("--chunk", type=int, default=64, help="steps per chunk on both sides")
    parser.add_argument("--batch", type=int, default=256, help="items per sampled batch")
    parser.add_argument("--batches", type=int, default=200, help="batches sampled")
    args = parser.parse_args()
    if args.role == "write":
        return print(json.dumps(write(args.address, args.items, args.chunk)))
    if args.role == "sample":
        return print(json.dumps(sample(args.address, args.batch, args.batches)))

    console = Console(width=120)
    console.print(f"[bold]replay benchmark[/]: {args.items:,} items of {ITEM_BYTES:,} bytes, batches of {args.batch}")
    ours = measure_rlrings(args.items, args.chunk, args.batch, args.batches)
    logged = measure_rlrings(args.items, args.chunk, args.batch, args.batches, store="embedded")
    reverb = measure_reverb(args.items, args.chunk, args.batch, args.batches)
    result = {
        "items": args.items,
        "item_bytes": ITEM_BYTES,
        "batch": args.batch,
        "rlrings": {"insert": rates(ours["insert"]), "sample": rates(ours["sample"]), "memory": memory(ours["memory"])},
        # the embedded store logs every chunk before its ack (an ack survives kill -9); target >= 0.8x memory
        "rlrings_embedded": {"insert": rates(logged["insert"]), "sample": rates(logged["sample"])},
    }
    result["embedded_over_memory_insert"] = (
        result["rlrings_embedded"]["insert"]["items_per_s"] / result["rlrings"]["insert"]["items_per_s"]
    )
    view = Table("measure", "rlrings", "reverb", "rlrings / reverb", title="replay: rlrings vs DeepMind Reverb")
    if reverb is not None:
        result["reverb"] = {
            "insert": rates(reverb["insert"]),
            "sample_python": rates(reverb["sample_python"]),
            "sample_dataset": rates(reverb["sample_dataset"]),
            "memory": memory(reverb["memory"]),
        }
        faster_sample = max(
            result["reverb"]["sample_python"]["items_per_s"], result["reverb"]["sample_dataset"]["items_per_s"]
        )
        result["ratios"] = {
            "insert": result["rlrings"]["insert"]["items_per_s"] / result["reverb"]["insert"]["items_per_s"],
            "sample_vs_faster_reverb_path": result["rlrings"]["sample"]["items_per_s"] / faster_sample,
            "sample_vs_python_client": result["rlrings"]["sample"]["items_per_s"]
            / result["reverb"]["sample_python"]["items_per_s"],
            "sample_vs_dataset": result["rlrings"]["sample"]["items_per_s"]
            / result["reverb"]["sample_dataset"]["items_per_s"],
        }
    r, v, ratio = result["rlrings"], result.get("reverb"), result.get("ratios")

    def rate(value, unit="items/s"):
        return "n/a" if value is None else f"{value:,.0f} {unit}"

    def times(key):
        return f"{ratio[key]:.2f}" if ratio else "n/a"

    rows = [
        (
            "insert (target >= 1)",
            rate(r["insert"]["items_per_s"]),
            rate(v and v["insert"]["items_per_s"]),
            times("insert"),
        ),
        ("insert MB/s", rate(r["insert"]["mb_per_s"], "MB/s"), rate(v and v["insert"]["mb_per_s"], "MB/s"), ""),
        (
            "insert, embedded store with its ack log (target >= 0.8x memory)",
            rate(result["rlrings_embedded"]["insert"]["items_per_s"]),
            "",
            f"{result['embedded_over_memory_insert']:.2f}x memory",
        ),
        (
            "sample, reverb python client",
            rate(r["sample"]["items_per_s"]),
            rate(v and v["sample_python"]["items_per_s"]),
            times("sample_vs_python_client"),
        ),
        (
            "sample, reverb batched dataset",
            rate(r["sample"]["items_per_s"]),
            rate(v and v["sample_dataset"]["items_per_s"]),
            times("sample_vs_dataset"),
        ),
        ("sample vs reverb's faster path (target >= 1)", "", "", times("sample_vs_faster_reverb_path")),
        ("sample MB/s", rate(r["sample"]["mb_per_s"], "MB/s"), rate(v and v["sample_dataset"]["mb_per_s"], "MB/s"), ""),
        (
            "server RSS per 1M items (raw 11.5 GiB)",
            f"{r['memory']['rss_gib_per_million']:.2f} GiB ({r['memory']['rss_over_raw']:.2f}x raw)",
            f"{v['memory']['rss_gib_per_million']:.2f} GiB ({v['memory']['rss_over_raw']:.2f}x raw)" if v else "n/a",
            "",
        ),
    ]
    for row in rows:
        view.add_row(*row)
    console.print(view)
    if reverb is None:
        console.print("[yellow]Reverb is not installed (.venv-reverb); run bench/reverb_env.sh[/]")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    console.print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

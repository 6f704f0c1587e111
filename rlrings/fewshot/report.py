"""Results of a few-shot experiment: confidence intervals, a table and a plot.

Seeds are the unit of replication: for each method and K, a seed's score is
its mean return after adaptation over the held-out tasks, and the 95%
interval is Student's t over those seed scores. Comparisons with scratch are
paired by seed (every method of a seed starts from the same random weights and
meets the same episodes), and a method "adapts better" at K where the
interval of its paired difference lies above 0.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table as RichTable
from scipy import stats

from rlrings.fewshot.jobs import TRAINED


def interval(values) -> dict:
    """Mean and 95% Student-t interval of ``values`` (no interval for one value)."""
    values = np.asarray(list(values), dtype=float)
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2:
        return {"mean": mean, "low": None, "high": None, "n": len(values)}
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(values)}


def _seed_scores(records: list[dict], key: str) -> dict[int, float]:
    by_seed = defaultdict(list)
    for record in records:
        by_seed[record["seed"]].append(record[key])
    return {seed: float(np.mean(values)) for seed, values in sorted(by_seed.items())}


def summarise(done: dict[str, dict], config, test_tasks: list[str]) -> dict:
    """The experiment's results as one JSON-ready dict."""
    adapted = [r for r in done.values() if r["kind"] == "adapt"]
    scores: dict[str, dict[int, dict[int, float]]] = {}
    methods = {}
    for method in config.methods:
        mine = [r for r in adapted if r["method"] == method]
        first = [r for r in mine if r["shots"] == config.shots[0]]
        scores[method] = {k: _seed_scores([r for r in mine if r["shots"] == k], "after") for k in config.shots}
        methods[method] = {
            "before_adaptation": interval(_seed_scores(first, "before").values()),
            "after_adaptation": {str(k): interval(scores[method][k].values()) for k in config.shots},
            "jobs": len(mine),
        }
    comparisons = []
    if "scratch" in config.methods:
        for method in (m for m in config.methods if m != "scratch"):
            for k in config.shots:
                seeds = scores[method][k].keys() & scores["scratch"][k].keys()
                difference = interval(scores[method][k][s] - scores["scratch"][k][s] for s in sorted(seeds))
                better = difference["low"] is not None and difference["low"] > 0
                comparisons.append({"method": method, "shots": k, "difference": difference, "better": better})
    trained = [m for m in config.methods if m in TRAINED and "scratch" in config.methods]
    checked = [k for k in config.shots if k in (1, 5)]
    ordering = {
        "claim": "pre-trained or meta-trained initialisations adapt better than scratch at 1 and 5 shots",
        "holds": bool(trained and checked)
        and all(any(c["better"] for c in comparisons if c["method"] in trained and c["shots"] == k) for k in checked),
        "shots_checked": checked,
    }
    training = {}
    for method in (m for m in config.methods if m in TRAINED):
        runs = [r for r in done.values() if r["kind"] == "train" and r["method"] == method]
        training[method] = {
            "runs": len(runs),
            "env_steps": interval(r["env_steps"] for r in runs),
            "seconds": interval(r["seconds"] for r in runs),
            "final_training_return": interval(r["curve"]["mean_return"][-1] for r in runs),
            "curves": [r["curve"] for r in sorted(runs, key=lambda r: r["seed"])],
        }
    return {
        "family": config.family,
        "test_tasks": test_tasks,
        "settings": config.results_settings(),
        "methods": methods,
        "comparisons_with_scratch": comparisons,
        "expected_ordering": ordering,
        "training": training,
        "job_seconds": sum(r["seconds"] for r in done.values()),
    }


def _text(stat: dict) -> str:
    if stat["low"] is None:
        return f"{stat['mean']:.1f}"
    return f"{stat['mean']:.1f} [{stat['low']:.1f}, {stat['high']:.1f}]"


def markdown(results: dict) -> str:
    settings = results["settings"]
    shots = settings["shots"]
    lines = [
        f"# Few-shot baseline: {results['family']}",
        "",
        f"Mean return on {len(results['test_tasks'])} held-out tasks after adapting with K episodes "
        f"(behaviour cloning: K demonstrations), {settings['eval_episodes']} evaluation episodes per task; "
        f"95% confidence intervals over {settings['seeds']} seeds.",
        "",
        "| method | before adaptation | " + " | ".join(f"K={k}" for k in shots) + " |",
        "| --- | --- | " + " | ".join("---" for _ in shots) + " |",
    ]
    for method, row in results["methods"].items():
        cells = [_text(row["after_adaptation"][str(k)]) for k in shots]
        lines.append(f"| {method} | {_text(row['before_adaptation'])} | " + " | ".join(cells) + " |")
    if results["comparisons_with_scratch"]:
        lines += ["", "Paired difference from scratch (same seeds, same episodes):", "",
                  "| method | " + " | ".join(f"K={k}" for k in shots) + " |",
                  "| --- | " + " | ".join("---" for _ in shots) + " |"]  # fmt: skip
        by_method = defaultdict(dict)
        for c in results["comparisons_with_scratch"]:
            by_method[c["method"]][c["shots"]] = _text(c["difference"]) + (" better" if c["better"] else "")
        for method, cells in by_method.items():
            lines.append(f"| {method} | " + " | ".join(cells[k] for k in shots) + " |")
    ordering = results["expected_ordering"]
    lines += ["", f"Expected ordering ({ordering['claim']}): **{'holds' if ordering['holds'] else 'does not hold'}**."]
    if results["training"]:
        lines += ["", "| initialisation | runs | env steps | seconds | training return at the end |",
                  "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for method, t in results["training"].items():
            lines.append(f"| {method} | {t['runs']} | {t['env_steps']['mean']:,.0f} | {_text(t['seconds'])} | "
                         f"{_text(t['final_training_return'])} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = results["settings"]["shots"]
    panels = 2 if results["training"] else 1
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.5), dpi=100, squeeze=False)
    left = axes[0][0]
    for i, (method, row) in enumerate(results["methods"].items()):
        stats_ = [row["after_adaptation"][str(k)] for k in shots]
        means = [s["mean"] for s in stats_]
        left.plot(shots, means, marker="o", color=f"C{i}", label=method)
        if all(s["low"] is not None for s in stats_):
            left.fill_between(shots, [s["low"] for s in stats_], [s["high"] for s in stats_], color=f"C{i}", alpha=0.2)
    left.set_xticks(shots)
    left.set_xlabel("K (episodes, or demonstrations for bc)")
    left.set_ylabel("return after adaptation")
    left.set_title(f"{results['family']}: {len(results['test_tasks'])} held-out tasks, "
                   f"{results['settings']['seeds']} seeds, 95% CI")  # fmt: skip
    left.legend()
    if panels == 2:
        right = axes[0][1]
        for method, t in results["training"].items():
            color = f"C{list(results['methods']).index(method)}"
            for j, curve in enumerate(t["curves"]):
                right.plot(curve["env_steps"], curve["mean_return"], color=color, alpha=0.5,
                           label=method if j == 0 else None)  # fmt: skip
        right.set_xlabel("env steps on training tasks")
        right.set_ylabel("mean return of the iteration's episodes")
        right.set_title("training the initialisations (one line per seed)")
        right.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def write(done: dict[str, dict], config, test_tasks: list[str], directory: Path, console: Console) -> dict:
    """Writes results.json, results.md and fewshot.png; prints the table."""
    results = summarise(done, config, test_tasks)
    paths = {
        "json": directory / "results.json",
        "markdown": directory / "results.md",
        "plot": directory / "fewshot.png",
    }
    results["paths"] = {name: str(path) for name, path in paths.items()}
    # shards sharing the directory may report at the same time: each file is replaced whole
    staged = {name: path.with_name(f".{path.stem}-{os.getpid()}{path.suffix}") for name, path in paths.items()}
    staged["json"].write_text(json.dumps(results, indent=2))
    staged["markdown"].write_text(markdown(results))
    plot(results, staged["plot"])
    for name, path in staged.items():
        os.replace(path, paths[name])
    table = RichTable(title=f"few-shot {config.family}: return after adaptation (95% CI over seeds)")
    table.add_column("method")
    table.add_column("before")
    for k in config.shots:
        table.add_column(f"K={k}")
    for method, row in results["methods"].items():
        table.add_row(
            method, _text(row["before_adaptation"]), *(_text(row["after_adaptation"][str(k)]) for k in config.shots)
        )
    console.print(table)
    ordering = results["expected_ordering"]
    console.print(f"expected ordering ({ordering['claim']}): {'holds' if ordering['holds'] else 'does not hold'}")
    return results

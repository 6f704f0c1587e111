"""``rlrings experiment fewshot``: the few-shot baseline as parallel jobs, resumable.

The experiment starts a parameter service on loopback (its versions live in
the experiment directory) and a pool of worker processes. It schedules every
training job first (the longest), adaptation jobs of untrained methods
(scratch, behaviour cloning) alongside them, and each trained method's
adaptation jobs as soon as its initialisation is published. Each finished job
is appended to ``jobs.jsonl`` and flushed to disk; run the same command again
and only the missing jobs run (the parameter service still holds the trained
initialisations). At the end it writes ``results.json``, ``results.md`` and
``fewshot.png`` (see ``rlrings.fewshot.report``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import re
import time
from pathlib import Path

import pydantic
from pydantic_settings import SettingsConfigDict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rlrings.clients.parameter import ParameterClient
from rlrings.core.errors import ConfigError
from rlrings.envs import tasks
from rlrings.fewshot import report
from rlrings.fewshot.adaptation import AdaptConfig, MetaConfig
from rlrings.fewshot.jobs import METHODS, TRAINED, Job, JobSettings, init_tag, run_job, start_worker
from rlrings.ops.processes import ServiceProcess, free_port
from rlrings.rpc.config import Settings
from rlrings.rpc.security import AuthConfig, ClientSecurity, TlsConfig


class FewShotConfig(Settings):
    """Settings of ``rlrings experiment fewshot``."""

    model_config = SettingsConfigDict(env_prefix="RLRINGS_FEWSHOT_")

    family: str = "cartpole"
    """Task family: cartpole, reacher (the robot arm, continuous torques), crafter or minerl (needs MineRL)."""
    methods: list[str] = list(METHODS)
    """Methods to compare: scratch, pretrain (multi-task pre-training then fine-tuning), reptile, bc
    (behaviour cloning from K demonstrations; needs a family with a demonstrator)."""
    shots: list[pydantic.NonNegativeInt] = [1, 5, 10]
    """K: episodes (or demonstrations) each held-out task adapts with; 0 measures the initialisation."""
    seeds: pydantic.PositiveInt = 10
    """Seeds per method; confidence intervals are over seeds."""
    test_tasks: pydantic.PositiveInt | None = None
    """Use only the first N held-out tasks; None: all of them."""
    eval_episodes: pydantic.PositiveInt = 20
    """Episodes measuring a policy's return before and after adaptation."""
    meta_env_steps: pydantic.PositiveInt = 300_000
    """Environment steps each pre-training or Reptile run may use on the training tasks."""
    task_batch: pydantic.PositiveInt = 4
    """Training tasks per pre-training or Reptile iteration."""
    episodes_per_task: pydantic.PositiveInt = 4
    """Episodes per task per iteration (Reptile's inner loop adapts on these)."""
    pretrain_learning_rate: pydantic.PositiveFloat = 1e-3
    """Adam learning rate of multi-task pre-training."""
    meta_step: pydantic.PositiveFloat = 1.0
    """Reptile's outer step size at the start (annealed linearly to 0)."""
    adapt_epochs: pydantic.PositiveInt = 10
    """Gradient steps of adaptation on the K episodes (every method but bc, which clones)."""
    adapt_learning_rate: pydantic.PositiveFloat = 1e-3
    """Adam learning rate of adaptation."""
    adapt_clip: pydantic.PositiveFloat = 0.2
    """PPO ratio clip of adaptation."""
    bc_epochs: pydantic.PositiveInt = 200
    """Behaviour cloning: gradient steps on the K demonstrations."""
    bc_learning_rate: pydantic.PositiveFloat = 3e-3
    """Behaviour cloning: Adam learning rate."""
    workers: pydantic.NonNegativeInt = 0
    """Worker processes running jobs in parallel; 0: one per CPU core."""
    shards: pydantic.PositiveInt = 1
    """Split the jobs over this many copies of the command (pods of a Kubernetes Indexed Job)
    sharing the directory and the parameter service; every job of a method and seed goes to one shard."""
    shard_index: pydantic.NonNegativeInt | None = None
    """This copy's shard; None: $JOB_COMPLETION_INDEX (set by an Indexed Job), else 0."""
    parameter_address: str | None = None
    """A running parameter service to keep the trained initialisations in (the stack's, on a
    cluster); None: start one on loopback, keeping its versions in the experiment directory."""
    tls: TlsConfig = TlsConfig()
    """TLS for dialling a running parameter service (ca_file; cert_file and key_file under mutual TLS)."""
    auth: AuthConfig = AuthConfig()
    """auth.token: the bearer token for a parameter service that requires one (RLRINGS_FEWSHOT_AUTH__TOKEN)."""
    out: Path | None = None
    """Experiment directory (jobs, parameters, results); None: runs/fewshot-<family>. Running again
    with the same directory resumes."""

    @pydantic.field_validator("methods", "shots", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @pydantic.field_validator("methods")
    @classmethod
    def _known_methods(cls, value: list[str]) -> list[str]:
        unknown = [method for method in value if method not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {list(METHODS)}")
        if not value:
            raise ValueError("name at least one method")
        return list(dict.fromkeys(value))

    @pydantic.field_validator("shots")
    @classmethod
    def _sorted_shots(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("name at least one K")
        return sorted(set(value))

    @pydantic.model_validator(mode="after")
    def _shard_in_range(self) -> FewShotConfig:
        if self.shard_index is None:
            self.shard_index = int(os.environ.get("JOB_COMPLETION_INDEX", "0"))
        if self.shard_index >= self.shards:
            raise ValueError(f"shard_index: {self.shard_index} is not below shards ({self.shards})")
        return self

    @property
    def directory(self) -> Path:
        return self.out or Path("runs") / f"fewshot-{self.family}"

    @property
    def name(self) -> str:
        """The experiment's name in tags: its directory's."""
        return re.sub(r"[^A-Za-z0-9._-]", "-", self.directory.resolve().name).lstrip("-._") or "fewshot"

    def results_settings(self) -> dict:
        """The settings results depend on (a resumed run must match them)."""
        skip = {"config", "workers", "out", "shards", "shard_index", "parameter_address", "tls", "auth"}
        return {name: value for name, value in self.model_dump(mode="json").items() if name not in skip}

    def adapt_config(self) -> AdaptConfig:
        return AdaptConfig(epochs=self.adapt_epochs, learning_rate=self.adapt_learning_rate, clip=self.adapt_clip)

    def meta_config(self) -> MetaConfig:
        return MetaConfig(
            env_steps=self.meta_env_steps,
            task_batch=self.task_batch,
            episodes_per_task=self.episodes_per_task,
            learning_rate=self.pretrain_learning_rate,
            meta_step=self.meta_step,
        )


class Experiment:
    def __init__(self, config: FewShotConfig):
        self.config = config
        self.family = tasks.family(config.family)  # ConfigError for an unknown family
        if "bc" in config.methods and self.family.expert is None:
            raise ConfigError(
                f"methods: bc needs demonstrations, and family {config.family!r} has no demonstrator; "
                f"leave bc out (--methods {','.join(m for m in config.methods if m != 'bc') or 'scratch'})"
            )
        test = self.family.test
        if config.test_tasks is not None and config.test_tasks > len(test):
            raise ConfigError(f"test_tasks: {config.test_tasks} is more than the {len(test)} held-out tasks")
        self.test_tasks = [task.name for task in test[: config.test_tasks]]
        self.directory = config.directory
        suffix = f"-{config.shard_index}-of-{config.shards}" if config.shards > 1 else ""
        self.jobs_path = self.directory / f"jobs{suffix}.jsonl"

    # -- planning and resuming -----------------------------------------------

    def all_jobs(self) -> list[Job]:
        c = self.config
        trained = [Job("train", m, seed) for m in c.methods if m in TRAINED for seed in range(c.seeds)]
        adapted = [
            Job("adapt", method, seed, task, shots)
            for method in c.methods
            for seed in range(c.seeds)
            for task in self.test_tasks
            for shots in c.shots
        ]
        return trained + adapted

    def jobs(self) -> list[Job]:
        """This shard's jobs: those of every ``shards``-th (method, seed)."""
        c = self.config
        pairs = [(method, seed) for method in c.methods for seed in range(c.seeds)]
        mine = {pair for i, pair in enumerate(pairs) if i % c.shards == c.shard_index}
        return [job for job in self.all_jobs() if (job.method, job.seed) in mine]

    def _check_settings(self) -> None:
        path = self.directory / "experiment.json"
        settings = self.config.results_settings()
        if path.exists():
            saved = json.loads(path.read_text())
            changed = sorted(name for name in settings.keys() | saved.keys() if settings.get(name) != saved.get(name))
            if changed:
                raise ConfigError(
                    f"out: {self.directory} holds an experiment with other settings ({', '.join(changed)}); "
                    f"run with the same settings to resume it, or choose another --out"
                )
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(settings, indent=2))

    def finished(self) -> dict[str, dict]:
        """Results of the jobs already done by any shard, by job id (a line cut by a crash is ignored)."""
        done = {}
        for path in sorted(self.directory.glob("jobs*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                done[record["job"]] = record
        return done

    def _record(self, result: dict) -> None:
        with open(self.jobs_path, "a") as file:
            file.write(json.dumps(result) + "\n")
            file.flush()
            os.fsync(file.fileno())

    # -- running ---------------------------------------------------------------

    def run(self, console: Console) -> dict:
        self._check_settings()
        c = self.config
        workers = c.workers or os.cpu_count() or 1
        parameter = None
        if c.parameter_address is None:
            ports = {"port": free_port(), "metrics_port": free_port()}
            config = {**ports, "directory": str(self.directory / "parameters")}
            parameter = ServiceProcess("parameter", "rlrings.services.parameter", config, self.directory).start()
        address = c.parameter_address or parameter.address
        tls, auth = (c.tls, c.auth) if c.parameter_address else (TlsConfig(), AuthConfig())
        try:
            with ParameterClient(address, security=ClientSecurity.of(tls, auth)) as client:
                client.wait_ready(timeout=60)
                published = dict(client.list().tags)
            done = self.finished()
            mine = self.jobs()
            # A training job counts as done only while its initialisation is still served.
            for job in mine:
                if job.kind == "train" and job.id in done and self.tag(job) not in published:
                    del done[job.id]
            todo = [job for job in mine if job.id not in done]
            shard = f"shard {c.shard_index} of {c.shards}: " if c.shards > 1 else ""
            console.print(
                f"[bold]rlrings[/] few-shot on {c.family}: methods {', '.join(c.methods)}; K in {c.shots}; "
                f"{c.seeds} seeds; {len(self.test_tasks)} held-out tasks; {workers} workers; {shard}"
                f"{len(mine) - len(todo)} of {len(mine)} jobs already done; directory {self.directory}"
            )
            settings = JobSettings(
                c.family, c.name, c.adapt_config(), c.meta_config(), c.eval_episodes, c.bc_epochs,
                c.bc_learning_rate, address, tls, auth,
            )  # fmt: skip
            self._schedule(todo, done, settings, workers, console)
        finally:
            if parameter is not None:
                parameter.stop()
        done = self.finished()
        missing = len({job.id for job in self.all_jobs()} - done.keys())
        if missing:
            console.print(f"{missing} jobs of other shards are not done yet; the report covers the finished ones")
        return report.write(done, self.config, self.test_tasks, self.directory, console)

    def tag(self, job: Job) -> str:
        return init_tag(self.config.name, job.method, job.seed)

    def _schedule(self, todo: list[Job], done: dict, settings: JobSettings, workers: int, console: Console) -> None:
        """Runs ``todo`` on ``workers`` processes: trainings first, each adaptation once its
        initialisation exists; records every result as it arrives."""
        untrained = {(job.method, job.seed) for job in todo if job.kind == "train"}
        trainings = [job for job in todo if job.kind == "train"]
        ready = trainings + [j for j in todo if j.kind == "adapt" and (j.method, j.seed) not in untrained]
        later = [j for j in todo if j.kind == "adapt" and (j.method, j.seed) in untrained]
        arrived: queue.Queue[tuple[Job, dict | None, BaseException | None]] = queue.Queue()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn())  # fmt: skip
        context = multiprocessing.get_context("spawn")
        # leaving the block terminates the workers, also on Ctrl-C or a failed job
        with context.Pool(workers, start_worker, (settings,)) as pool, Progress(*columns, console=console) as progress:

            def submit(job: Job) -> None:
                pool.apply_async(
                    run_job,
                    (job,),
                    callback=lambda result: arrived.put((job, result, None)),
                    error_callback=lambda error: arrived.put((job, None, error)),
                )

            bar = progress.add_task("jobs", total=len(todo))
            for job in ready:
                submit(job)
            for _ in range(len(todo)):
                job, result, error = arrived.get()
                if error is not None:
                    raise RuntimeError(f"job {job.id} failed: {type(error).__name__}: {error}")
                self._record(result)
                done[job.id] = result
                progress.update(bar, advance=1, description=self._describe(done))
                if job.kind == "train":
                    progress.console.print(
                        f"{job.id}: {result['env_steps']:,} env steps in {result['seconds']:.0f} s, "
                        f"mean return at the end {result['curve']['mean_return'][-1]:.0f}; "
                        f"published as {self.tag(job)} (version {result['version']})"
                    )
                    for follow in later:
                        if (follow.method, follow.seed) == (job.method, job.seed):
                            submit(follow)

    def _describe(self, done: dict) -> str:
        latest = {}
        for record in done.values():
            if record["kind"] == "adapt":
                latest.setdefault(record["method"], []).append(record["after"])
        means = ", ".join(f"{m} {sum(v) / len(v):.0f}" for m, v in latest.items())
        return f"jobs (mean return after adaptation: {means})" if means else "jobs"


def run_experiment(config: FewShotConfig, console: Console | None = None) -> int:
    """Runs (or resumes) the experiment; returns the exit status (0; 1 on failure; 2 on bad settings; 130 on Ctrl-C)."""
    console = console or Console()
    start = time.monotonic()
    try:
        results = Experiment(config).run(console)
    except ConfigError as error:
        console.print(f"[red]rlrings experiment fewshot: {error}[/]")
        return 2
    except KeyboardInterrupt:
        console.print(
            f"[yellow]interrupted; finished jobs are kept in {config.directory / 'jobs.jsonl'}: run the same "
            f"command to resume[/]"
        )
        return 130
    except RuntimeError as error:
        console.print(f"[red]rlrings experiment fewshot: {error}[/]")
        return 1
    console.print(f"done in {time.monotonic() - start:.0f} s; results in {results['paths']}")
    return 0

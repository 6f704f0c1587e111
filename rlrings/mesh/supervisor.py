"""The supervisor of ``rlrings up``: starts the planned services, restarts any that die (a
ring restarts as a whole, from its last checkpoint), polls their status, runs the evaluator,
and stops them in order."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

import grpc
from rich.console import Console
from rich.live import Live

from rlrings import algorithms
from rlrings.core.errors import ConfigError
from rlrings.core.ring import HOROVOD_HINT, horovod_available
from rlrings.envs import best_return, env_spec, solved_threshold
from rlrings.mesh.config import MeshConfig
from rlrings.mesh.evaluation import Evaluation, Evaluator, evaluation_device
from rlrings.mesh.plan import place_ring, plan
from rlrings.mesh.report import Progress, Run, progress_line, summarise, view
from rlrings.ops.processes import ServiceProcess
from rlrings.rpc.security import AuthConfig, ClientSecurity, TlsConfig
from rlrings.v1 import actor_pb2, actor_pb2_grpc, learner_pb2, learner_pb2_grpc

log = logging.getLogger(__name__)
MAX_QUICK_DEATHS = 5
CRASH_LOOP_SECONDS = 30.0
"""A service that dies MAX_QUICK_DEATHS times in a row within CRASH_LOOP_SECONDS of its start, of its
own accord, is crash-looping and stops the mesh. One that lived longer, or was killed from outside
(SIGKILL: the OOM killer, an operator, the chaos harness), is restarted however often it happens:
a mesh that runs for days must not stop at its fifth incident."""
# Status polls start while services are still importing: gRPC's default reconnect backoff (1 s growing
# to 120 s) would then leave a service unpolled for tens of seconds after it is up. Loopback redials are cheap.
_STATUS_CHANNEL = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 1000)]


def crash_looping(service: ServiceProcess, code: int | None, now: float) -> bool:
    """Counts a death of ``service`` (exit ``code``, at ``now``); whether it is crash-looping."""
    if code == -signal.SIGKILL or now - service.started_at >= CRASH_LOOP_SECONDS:
        service.quick_deaths = 0
    else:
        service.quick_deaths += 1
    return service.quick_deaths >= MAX_QUICK_DEATHS


def point_latest_at(run_dir: Path) -> None:
    """``runs/latest`` names the newest run of ``runs/`` (a relative symlink, swapped in atomically),
    so that ``--run runs/latest`` can be copied from the docs."""
    latest = run_dir.parent / "latest"
    staging = run_dir.parent / f".latest-{os.getpid()}"
    staging.unlink(missing_ok=True)
    staging.symlink_to(run_dir.name)
    staging.replace(latest)


class Mesh:
    def __init__(self, config: MeshConfig):
        self.config = config
        self.spec = env_spec(config.env)  # ConfigError for unknown envs, before anything starts
        if config.learners > 1 and config.ring == "horovod" and not horovod_available():
            raise ConfigError(f"ring: {HOROVOD_HINT}")
        if config.target_return is None:
            config.target_return = solved_threshold(config.env)
        self.run_dir = config.run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if config.run_dir is None:
            point_latest_at(self.run_dir)
        self.services = plan(config, self.spec, self.run_dir, self._make_certificates)
        self.progress = Progress()
        self._channels: dict[str, grpc.Channel] = {}

    def _make_certificates(self) -> dict:
        from rlrings.rpc import certs

        ca = certs.make_ca(self.run_dir / "tls")
        pair = certs.issue(ca, self.run_dir / "tls", "mesh", ["127.0.0.1", "localhost"])
        return {"cert_file": str(pair.cert_file), "key_file": str(pair.key_file), "ca_file": str(ca.cert_file),
                "mutual": True}  # fmt: skip

    def snapshot(self) -> Run:
        """What the report reads of this run (it knows no Mesh)."""
        return Run(self.config, self.spec, self.run_dir, self.progress, self._learners_text())

    def _learners_text(self) -> str:
        c = self.config
        return "1 learner" if c.learners == 1 else f"{c.learners} learner ranks ({c.ring} ring)"

    @property
    def actors(self) -> list[ServiceProcess]:
        return [s for s in self.services if s.name.startswith("actor-")]

    @property
    def learners(self) -> list[ServiceProcess]:
        """The learner, or the ranks of the learner ring (rank 0 first)."""
        return [s for s in self.services if s.name == "learner" or s.name.startswith("learner-")]

    @property
    def viewer_url(self) -> str | None:
        viewer = next((s for s in self.services if s.name == "viewer"), None)
        return f"http://127.0.0.1:{viewer.config['http_port']}/" if viewer else None

    def service(self, name: str) -> ServiceProcess:
        return next(s for s in self.services if s.name == name)

    def target_notice(self) -> str:
        """What will end the run as solved, in a line: the threshold and where it came from, or
        that nothing will (an env without a definition, or no evaluator)."""
        c = self.config
        if c.target_return is None:
            return (f"solved: {c.env} has no solved definition; the run ends at its budget (give --target-return "
                    "for one)")  # fmt: skip
        given = "given" if solved_threshold(c.env) != c.target_return else "the env's definition"
        best = best_return(c.env)
        if best is not None and c.target_return > best:
            return (f"solved: never: target {c.target_return:g} ({given}) is above the most an episode of {c.env} "
                    f"can return ({best:g}); the run ends at its budget")  # fmt: skip
        if not c.evaluation:
            return f"solved: not judged (--evaluation false); target {c.target_return:g} ({given})"
        return (
            f"solved: a version's greedy mean reaches {c.target_return:g} ({given}) over {c.confirm_episodes} "
            f"fresh episodes, in {c.confirm_windows} window(s), {c.confirm_sigmas:g} standard errors to spare"
        )

    # -- running -------------------------------------------------------------

    def run(self, console: Console) -> dict:
        c = self.config
        console.print(
            f"[bold]rlrings[/] mesh: {c.env} with {c.algorithm.name}, {c.actors} actors x {c.envs_per_actor} envs, "
            f"{self._learners_text()}; run dir {self.run_dir}"
        )
        if self.viewer_url:
            console.print(f"watch the agent or play at [bold]{self.viewer_url}[/]")
        parameter = self.service("parameter")
        tls = parameter.config.get("tls", {})
        dial = "".join(f" --{flag.replace('_', '-')} {tls[flag]}" for flag in ("ca_file", "cert_file", "key_file")
                       if tls.get(flag))  # fmt: skip
        console.print(
            f"versions while it runs: rlrings models list --address {parameter.address}{dial}; "
            f"after it ends: rlrings models list --run {self.run_dir}",
            soft_wrap=True, highlight=False,
        )  # fmt: skip
        console.print(self.target_notice(), soft_wrap=True, highlight=False)
        for service in self.services:
            service.start()
        evaluator = self._start_evaluator()
        reason = "interrupted"
        try:
            with contextlib.ExitStack() as stack:
                # a terminal gets the live table; a log (CI, nohup, a pipe, a notebook's cell) a line
                # every few seconds. (isatty, not console.is_terminal: FORCE_COLOR makes Rich call a pipe one.)
                terminal = console.is_terminal and console.file.isatty()
                live = stack.enter_context(Live(console=console, refresh_per_second=2)) if terminal else None
                next_line = time.monotonic() + c.progress_seconds
                while True:
                    self._supervise(console)
                    self._poll()
                    if live is not None:
                        live.update(view(self.snapshot()))
                    elif time.monotonic() >= next_line:
                        console.print(progress_line(self.snapshot()), soft_wrap=True, highlight=False)
                        console.file.flush()
                        next_line = time.monotonic() + c.progress_seconds
                    reason = self._finished()
                    if reason:
                        break
                    time.sleep(0.5)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: stopping the mesh[/]")
            reason = "interrupted"
        finally:
            self.progress.ended = time.monotonic() - self.progress.start
            with contextlib.suppress(Exception):  # the summary carries the counters as they ended
                self._poll()
            if evaluator is not None:
                evaluator.stop()
            self.stop()
        return summarise(self.snapshot(), reason, console)

    def _start_evaluator(self) -> Evaluator | None:
        c = self.config
        if not c.evaluation:
            return None
        from rlrings.clients.parameter import ParameterClient

        parameter = self.service("parameter")
        security = ClientSecurity.of(TlsConfig(**parameter.config.get("tls", {})), AuthConfig())
        progress = self.progress

        def context() -> tuple[float, int]:
            return time.monotonic() - progress.start, progress.total_env_steps

        board = None

        def on_result(result: Evaluation, confirmation: Evaluation | None, solved: bool) -> None:
            nonlocal board
            if board is None:  # torch is imported by now, in the evaluator's thread
                from torch.utils.tensorboard import SummaryWriter

                board = SummaryWriter(str(self.run_dir / "tensorboard" / "evaluator"))
            board.add_scalar("eval/greedy_return", result.greedy_mean, result.env_steps)
            board.add_scalar("eval/versions_behind", result.versions_behind, result.env_steps)
            board.add_scalar("eval/seconds_behind", result.seconds_behind, result.env_steps)
            if result.sampled_returns:
                board.add_scalar("eval/sampled_return", result.sampled_mean, result.env_steps)
            from rlrings.mesh.report import achievements

            scored = achievements(
                self.snapshot()
            )  # Crafter: the score and success rates of the training episodes so far
            if scored:
                board.add_scalar("crafter/score_percent", scored["crafter_score"], progress.total_env_steps)
                for name, rate in scored["achievement_success_percent"].items():
                    board.add_scalar(f"crafter/success_percent/{name}", rate, progress.total_env_steps)
            board.flush()
            progress.evaluations.append(result)
            if confirmation is not None:
                progress.confirmations.append(confirmation)
                if progress.solved_by is None and solved:
                    progress.solved_by = confirmation
                    progress.solved_confirmed_at = time.monotonic() - progress.start

        return Evaluator(
            c.env, ParameterClient(parameter.address, security=security), context, on_result,
            episodes=c.eval_episodes, confirm_episodes=c.confirm_episodes, confirm_windows=c.confirm_windows,
            confirm_sigmas=c.confirm_sigmas, target=c.target_return,
            sampled=algorithms.get(c.algorithm.name).stochastic, interval_seconds=c.eval_interval_seconds, seed=c.seed,
            device=evaluation_device(c.eval_device), max_envs=c.eval_envs, niceness=c.eval_niceness,
        ).start()  # fmt: skip

    def _supervise(self, console: Console) -> None:
        ring = self.learners if len(self.learners) > 1 else []
        for service in self.services:
            if service.alive():
                continue
            code = service.process.returncode if service.process else None
            if code == 2:
                raise ConfigError(f"{service.name} refused its configuration; see {service.log_path}")
            if crash_looping(service, code, time.monotonic()):
                raise RuntimeError(
                    f"{service.name} died {service.quick_deaths} times in a row within {CRASH_LOOP_SECONDS:.0f} s of "
                    f"starting (last exit {code}); see {service.log_path}"
                )
            if service in ring:
                self._restart_ring(service, console)
                return
            if service.name in self.progress.env_steps:  # keep the steps of its earlier life
                self.progress.steps_base[service.name] = self.progress.steps_base.get(
                    service.name, 0
                ) + self.progress.env_steps.pop(service.name)
                self.progress.last_episode.pop(service.name, None)
            service.restarts += 1
            message = f"{service.name} exited with {code}; restarting it (restart {service.restarts})"
            self.progress.restarts.append(message)
            console.log(message)
            service.start()

    def _restart_ring(self, dead: ServiceProcess, console: Console) -> None:
        """A rank died: the others stop (they fail in their next allreduce
        anyway), and all ranks start again together, from rank 0's last
        checkpoint. Actors go on acting with the weights they have."""
        ranks = self.learners
        exits = [f"{r.name} exited with {r.process.returncode}" for r in ranks if r.process and not r.alive()]
        for rank in ranks:
            if rank.alive():
                rank.process.send_signal(signal.SIGTERM)
        for rank in ranks:
            rank.stop(timeout=60)
        place_ring(ranks)
        dead.restarts += 1
        message = f"{', '.join(exits)}; restarting the learner ring (restart {dead.restarts})"
        self.progress.restarts.append(message)
        console.log(message)
        for rank in ranks:
            rank.start()

    def _stub(self, service: ServiceProcess, stub_cls):
        channel = self._channels.get(service.address)
        if channel is None:
            security = ClientSecurity.of(TlsConfig(**service.config.get("tls", {})), AuthConfig())
            channel = self._channels[service.address] = security.channel(service.address, _STATUS_CHANNEL)
        return stub_cls(channel)

    def _poll(self) -> None:
        progress = self.progress
        rate = 0.0
        for actor in self.actors:
            try:
                status = self._stub(actor, actor_pb2_grpc.ActorServiceStub).GetStatus(
                    actor_pb2.GetActorStatusRequest(episodes_after=progress.last_episode.get(actor.name, 0)),
                    timeout=2,
                )
            except grpc.RpcError:
                continue  # starting or restarting
            progress.env_steps[actor.name] = status.env_steps
            rate += status.steps_per_second
            for episode in status.recent_episodes:
                for name in episode.achievements:
                    progress.achievement_episodes[name] = progress.achievement_episodes.get(name, 0) + 1
                progress.episodes.append(
                    (episode.end_time - progress.start_wall, episode.episode_return, progress.total_env_steps)
                )
                progress.last_episode[actor.name] = episode.index
        progress.episodes.sort(key=lambda e: e[0])
        progress.env_rate = rate
        if progress.first_steps_at is None and progress.total_env_steps:
            progress.first_steps_at = time.monotonic() - progress.start
        try:
            progress.learner = learner = self._stub(self.learners[0], learner_pb2_grpc.LearnerServiceStub).GetStatus(
                learner_pb2.GetLearnerStatusRequest(), timeout=2
            )
            if learner.learner_step:
                progress.lags.append((learner.policy_lag, learner.policy_lag_updates, learner.policy_lag_seconds))
        except grpc.RpcError:
            pass
        target = self.config.target_return
        if (
            target is not None
            and progress.train_solved_at is None
            and len(progress.episodes) >= self.config.return_window
            and progress.mean_return(self.config.return_window) >= target
        ):
            progress.train_solved_at = (time.monotonic() - progress.start, progress.total_env_steps)

    def _finished(self) -> str:
        c, p = self.config, self.progress
        if p.solved_confirmed_at is not None and time.monotonic() - p.start >= p.solved_at + c.keep_running_seconds:
            return "solved"
        if c.max_env_steps and p.total_env_steps >= c.max_env_steps:
            return "step budget reached"
        if time.monotonic() - p.start >= c.max_seconds:
            return "time limit reached"
        return ""

    def stop(self) -> None:
        """Stops in order: actors (their last chunks still reach replay and the
        learner), then the learner ranks together (rank 0 writes a checkpoint) and the inference
        service, then the stores; a service none of these names goes with the last stage."""
        front = [s for s in self.services if s.name == "viewer"]
        middle = [s for s in self.services if s.name == "inference"]
        stores = [self.service("parameter"), self.service("replay")]
        staged = {id(s) for s in [*self.actors, *front, *self.learners, *middle, *stores]}
        stages = [self.actors + front, self.learners + middle,
                  stores + [s for s in self.services if id(s) not in staged]]  # fmt: skip
        for stage in stages:
            for service in stage:
                if service.alive():
                    service.process.send_signal(signal.SIGTERM)
            for service in stage:
                code = service.stop(timeout=60)
                if code not in (0, None, -signal.SIGTERM):
                    log.warning("%s exited with %s; see %s", service.name, code, service.log_path)
        for channel in self._channels.values():
            channel.close()


def run_mesh(config: MeshConfig, console: Console | None = None) -> int:
    """Runs the mesh; returns the exit status (0, 1 on failure, 2 on bad config, 130 on Ctrl-C or SIGTERM)."""
    console = console or Console()

    def terminated(signum, frame):  # a process manager's stop: as Ctrl-C, the mesh stops in order
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminated)
    try:
        mesh = Mesh(config)
        summary = mesh.run(console)
    except ConfigError as error:
        console.print(f"[red]rlrings up: {error}[/]")
        return 2
    except RuntimeError as error:
        console.print(f"[red]rlrings up: {error}[/]")
        return 1
    return 130 if summary["reason"] == "interrupted" else 0

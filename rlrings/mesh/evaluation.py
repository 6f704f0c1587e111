"""The evaluator: frozen published versions play fresh episodes, apart from training.

Training episodes mix many policy versions and exploration, so their mean
return says little about any one policy. The evaluator fetches the newest
published version, freezes it, and plays episodes on its own environments
(seeds no actor uses): greedy (the most likely action, or the largest
Q-value) and, for policies that sample, sampled. Both kinds play at once in
one vector of envs, one batched forward pass per step (on the GPU where the
machine has one), so a round of Atari games takes the time of its longest
game rather than of twenty games in a row. Each env plays an equal share of
its kind's episodes, so short episodes do not crowd out long ones. Every round
reports how far it was behind the learner when it ended (versions and seconds),
since a round that lags far behind evaluates a policy nobody trains any more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

from rlrings.clients.parameter import ParameterClient
from rlrings.core.errors import NotFoundError, RlringsError

log = logging.getLogger(__name__)

# Seeds of evaluation envs start here, far from the actors' (seed + 1000 * i).
_SEED_BASE = 10_000_000
HOLD_SECONDS = 3600.0
"""How long the parameter service keeps a version the evaluator plays (its report ends the hold)."""


@dataclass
class Evaluation:
    """One round of evaluation of one frozen version."""

    version: int
    learner_step: int
    started_seconds: float
    """When the version was fetched, in seconds since the run started."""
    env_steps: int
    """Training env steps when the version was fetched."""
    greedy_returns: list[float]
    sampled_returns: list[float]
    seconds: float
    """How long the round took."""
    versions_behind: int = 0
    """Versions the learner had published past this one when the round ended."""
    seconds_behind: float = 0.0
    """Age of the version when the round ended: seconds since it was published."""

    @property
    def greedy_mean(self) -> float:
        return float(np.mean(self.greedy_returns)) if self.greedy_returns else float("nan")

    @property
    def sampled_mean(self) -> float:
        return float(np.mean(self.sampled_returns)) if self.sampled_returns else float("nan")

    def record(self) -> dict:
        return asdict(self) | {"greedy_mean": self.greedy_mean, "sampled_mean": self.sampled_mean}


def lower_this_threads_priority(niceness: int) -> None:
    """Adds ``niceness`` to the calling thread's (Linux schedules threads one by one, and threads it
    starts inherit the value: the C++ env threads of Atari's vector env). Elsewhere, or where the
    system refuses, the thread keeps its priority and a warning says so."""
    from rlrings.ops.processes import lower_thread_priority

    try:
        lower_thread_priority(threading.get_native_id(), niceness)
    except (AttributeError, OSError) as error:
        log.warning("the evaluator keeps training's priority (eval_niceness %d not applied: %s)", niceness, error)


def evaluation_device(name: str) -> str:
    """``auto``: the GPU where CUDA is available (beside the learner's, on one node), else the CPU."""
    from rlrings.core.devices import resolve_device

    return str(resolve_device(name))


MODES = ("greedy", "sampled")
"""How an evaluation picks actions: the distribution's mode (the most likely action, the largest
Q-value, a Gaussian's mean) or a sample from it."""


def play(
    model, spec, env_id: str, episodes: int, seed: int, greedy: bool, max_envs: int = 16, stopped=lambda: False
) -> list[float]:
    """Returns of ``episodes`` fresh episodes of ``model`` (a network for ``spec``, a ``ModelSpec``)
    on ``env_id``, playing its distribution's mode (``greedy``) or samples (fewer if ``stopped()``
    turns true first: long episodes, Crafter's, must not hold a stopping run)."""
    mode = "greedy" if greedy else "sampled"
    return play_modes(model, spec, env_id, {mode: episodes}, seed, max_envs=max_envs, stopped=stopped)[mode]


def play_modes(
    model,
    spec,
    env_id: str,
    episodes: Mapping[str, int],
    seed: int,
    max_envs: int = 32,
    device: str = "cpu",
    stopped: Callable[[], bool] = lambda: False,
) -> dict[str, list[float]]:
    """Returns, for each mode of :data:`MODES` in ``episodes``, that many fresh episodes' returns,
    all played in one vector of at most ``max_envs`` envs with one forward pass per step on
    ``device`` (the model is moved there). Envs are shared out in proportion to each mode's episodes."""
    import torch

    from rlrings.core import distributions
    from rlrings.envs import make_vector_env

    unknown = set(episodes) - set(MODES)
    if unknown:
        raise ValueError(f"episodes: unknown modes {sorted(unknown)}; use {MODES}")
    wanted = {mode: count for mode, count in episodes.items() if count > 0}
    total = sum(wanted.values())
    if not total:
        return {mode: [] for mode in episodes}
    num_envs = max(len(wanted), min(max_envs, total))
    modes, targets = [], []  # per env: its mode and how many episodes it plays
    for mode, count in wanted.items():
        share = max(1, min(count, num_envs * count // total))
        modes += [mode] * share
        targets += list(np.full(share, count // share) + (np.arange(share) < count % share))
    num_envs, targets = len(modes), np.array(targets)
    greedy = torch.as_tensor([mode == "greedy" for mode in modes], device=device)
    model = model.to(device)
    envs = make_vector_env(env_id, num_envs, seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    try:
        obs, _ = envs.reset(seed=seed)
        counts = np.zeros(num_envs, dtype=np.int64)
        running = np.zeros(num_envs)
        returns: dict[str, list[float]] = {mode: [] for mode in episodes}
        while (counts < targets).any() and not stopped():
            with torch.inference_mode():
                params, _ = model(torch.as_tensor(obs).to(device, non_blocking=True))
                dist = spec.make_distribution(params)
                actions = _where(greedy, dist.mode(), dist.sample(generator))
            obs, rewards, terminated, truncated, _ = envs.step(
                distributions.to_env_action(spec.action_space, actions.cpu())
            )
            running += rewards
            for i in np.flatnonzero(terminated | truncated):
                if counts[i] < targets[i]:
                    returns[modes[i]].append(float(running[i]))
                    counts[i] += 1
                running[i] = 0.0
        return returns
    finally:
        envs.close()


def _where(greedy, modes, samples):
    """Per env (the leading axis), the mode where ``greedy`` else the sample."""
    import torch

    return torch.where(greedy.view(-1, *([1] * (modes.dim() - 1))), modes, samples)


def crafter_score(success_rates: dict[str, float]) -> float:
    """The Crafter score (Hafner, 2021): the geometric mean of the achievements'
    success rates in percent, offset by one, ``exp(mean(ln(1 + s_i))) - 1``."""
    rates = np.array(list(success_rates.values()), dtype=float)
    return float(np.exp(np.mean(np.log1p(rates))) - 1) if len(rates) else float("nan")


def achievement_names(env_id: str) -> tuple[str, ...]:
    """Every achievement ``env_id`` can report (so that those never unlocked count as 0%); () for games without."""
    if env_id == "crafter" or env_id.startswith("task:crafter/"):
        import crafter

        return tuple(crafter.constants.achievements)
    return ()


class Evaluator:
    """Evaluates each new version published to ``parameters`` in a background thread.

    ``context()`` gives (seconds since the run started, training env steps) at
    the moment a version is fetched; ``on_result`` gets every :class:`Evaluation`, its
    confirmation (or None) and whether the version solved the task.
    A round plays ``episodes`` greedy (and, with ``sampled``, as many sampled)
    episodes; when its greedy mean reaches ``target``, ``confirm_episodes`` more
    greedy episodes decide whether the version solved the task (the env's own
    definition: a mean over that many consecutive episodes), and with
    ``confirm_windows`` > 1 as many more independent windows must each reach it too,
    and the mean of all of them must clear it by ``confirm_sigmas`` standard errors of
    one window's mean (the spread a fresh check of ``confirm_episodes`` episodes would
    see): a version whose true mean sits at the threshold passes one window half the
    time, and the first window to pass picks such versions out (the winner's curse);
    the margin keeps them from being handed over as solved. A perfect policy (every
    episode alike) has no spread and needs no margin.
    """

    def __init__(
        self,
        env_id: str,
        parameters: ParameterClient,
        context: Callable[[], tuple[float, int]],
        on_result: Callable[[Evaluation, Evaluation | None, bool], None],
        episodes: int = 10,
        confirm_episodes: int = 100,
        confirm_windows: int = 1,
        confirm_sigmas: float = 0.0,
        target: float | None = None,
        sampled: bool = True,
        interval_seconds: float = 2.0,
        seed: int = 0,
        device: str = "cpu",
        max_envs: int = 32,
        niceness: int = 0,
    ):
        self.env_id = env_id
        self.parameters = parameters
        self.context = context
        self.on_result = on_result
        self.episodes = episodes
        self.confirm_episodes = confirm_episodes
        self.confirm_windows = confirm_windows
        self.confirm_sigmas = confirm_sigmas
        self.target = target
        self.sampled = sampled
        self.interval_seconds = interval_seconds
        self.seed = _SEED_BASE + seed
        self.device = device
        self.max_envs = max_envs
        self.niceness = niceness
        self.rounds = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="evaluator", daemon=True)

    def start(self) -> Evaluator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        import torch

        from rlrings.core.models import build_model, load_weights
        from rlrings.rpc import wire

        if self.device == "cpu":
            torch.set_num_threads(1)  # beside the actors and the learner, on their cores
        last_version = 0
        while not self._stopped.is_set():
            try:
                newest = self.parameters.fetch(tag="latest", header_only=True, timeout=30)[0].version
                if newest == last_version:
                    self._stopped.wait(0.2)
                    continue
                # held until its report: retention cannot prune what is being played
                header, data = self.parameters.fetch(version=newest, timeout=30, hold_seconds=HOLD_SECONDS)
            except RlringsError:  # not published yet, pruned since the look, or parameter restarting
                self._stopped.wait(1.0 if last_version == 0 else 0.2)
                continue
            last_version = header.version
            started, env_steps = self.context()
            spec = wire.model_spec_from_proto(header.model)
            model = build_model(spec).eval()
            load_weights(model, data)
            begin = time.monotonic()
            seed = self.seed + 1000 * self.rounds
            self.rounds += 1
            stopped = self._stopped.is_set
            episodes = {"greedy": self.episodes, "sampled": self.episodes if self.sampled else 0}
            played = self._play_round(model, spec, self.env_id, episodes, seed, self.max_envs, self.device, stopped)
            if stopped():
                return
            result = Evaluation(header.version, header.learner_step, started, env_steps, played["greedy"],
                                played["sampled"], time.monotonic() - begin)  # fmt: skip
            confirmation, solved = None, False
            if self.target is not None and result.greedy_mean >= self.target and self.confirm_episodes:
                begin, returns = time.monotonic(), []
                for window in range(self.confirm_windows):  # each window must reach the target
                    played = play_modes(model, spec, self.env_id, {"greedy": self.confirm_episodes},
                                        seed + 700 + 37 * window, self.max_envs, self.device, stopped)  # fmt: skip
                    if stopped():
                        return
                    returns += played["greedy"]
                    solved = float(np.mean(played["greedy"])) >= self.target
                    if not solved:
                        break
                if solved and len(returns) > 1:  # clear the target by the margin, not by luck
                    standard_error = float(np.std(returns, ddof=1)) / self.confirm_episodes**0.5
                    solved = float(np.mean(returns)) - self.confirm_sigmas * standard_error >= self.target
                confirmation = Evaluation(header.version, header.learner_step, started, env_steps, returns, [],
                                          time.monotonic() - begin)  # fmt: skip
            behind = self._behind(header)
            for evaluation in (result, confirmation):
                if evaluation is not None:
                    evaluation.versions_behind, evaluation.seconds_behind = behind
            try:  # reported before on_result: once a run says "solved", the service has tagged it
                best = confirmation or result
                self.parameters.report_evaluation(
                    header.version, best.greedy_mean, len(best.greedy_returns), confirmed=confirmation is not None,
                    solved=solved,
                )  # fmt: skip
            except NotFoundError:  # (a parameter service restarted empty meanwhile)
                log.warning("version %d was gone before its evaluation was reported", header.version)
            except RlringsError as error:
                log.warning("reporting an evaluation failed: %s", error)
            self.on_result(result, confirmation, solved)
            self._stopped.wait(self.interval_seconds)

    def _play_round(self, *args) -> dict[str, list[float]]:
        """``play_modes(*args)``: here with no ``niceness``, else on a daemon thread of its own,
        lowered by it; a
        confirmation plays on the evaluator's thread, at training's priority: it is what ends a
        solved run, and a thread cannot raise its priority again without privileges most
        containers lack. (Daemon, as the evaluator's thread: a round still making its envs when
        the run ends must not hold the process's exit.)"""
        if not self.niceness:
            return play_modes(*args)
        outcome: dict = {}

        def play() -> None:
            lower_this_threads_priority(self.niceness)
            try:
                outcome["played"] = play_modes(*args)
            except BaseException as error:  # raised again on the evaluator's thread, as before
                outcome["error"] = error

        thread = threading.Thread(target=play, name="evaluator-round", daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["played"]

    def _behind(self, header) -> tuple[int, float]:
        """How far the learner had moved past ``header``'s version by now: versions published
        since, and seconds since it was published."""
        age = max(0.0, time.time() - header.created.ToNanoseconds() / 1e9) if header.HasField("created") else 0.0
        try:
            newest = self.parameters.fetch(tag="latest", header_only=True, timeout=30)[0].version
        except RlringsError:  # parameter restarting: the version's age still says it
            newest = header.version
        return max(0, newest - header.version), age

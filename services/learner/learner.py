"""The learner's process shell: the ring, sampling, updates, publishing, checkpoints, logs.

It knows no algorithm: the algorithm's learning half (``rlrings.algorithms``)
updates on the batches this loop draws from replay, and this loop sends the
module it publishes on. As one rank of a ring
(``rlrings.core.ring``) it samples its own batches, lets the ring average the
gradients, and agrees with the other ranks after every update whether to
stop; rank 0 alone publishes weights, writes checkpoints and TensorBoard.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import torch

from rlrings import algorithms
from rlrings.algorithms.api import DEMONSTRATIONS, Source
from rlrings.clients.parameter import ParameterClient
from rlrings.clients.replay import ReplayClient
from rlrings.core.devices import resolve_device
from rlrings.core.errors import ConfigError, NotFoundError, RlringsError
from rlrings.core.models import WEIGHTS_FORMAT, build_model, weights_to_bytes
from rlrings.core.ring import LocalRing, Ring, connect
from rlrings.envs import env_spec
from rlrings.rpc import wire
from rlrings.rpc.control import RateMeter
from rlrings.services.learner.config import LearnerConfig
from rlrings.services.learner.device_clock import DeviceClock
from rlrings.services.learner.prefetch import DeviceBatch, DeviceBatches, to_device

log = logging.getLogger(__name__)


class Learner:
    def __init__(self, config: LearnerConfig):
        self.config = config
        torch.set_num_threads(config.torch_threads)
        torch.manual_seed(config.seed)
        self.device = resolve_device(config.device)
        self.algorithm = algorithms.get(config.algorithm.name)
        self.model_spec = self.algorithm.model_spec(env_spec(config.env), config.architecture, config.algorithm)
        self.model = build_model(self.model_spec).to(self.device)
        self.learning = self.algorithm.learning(config.algorithm, self.model_spec, self.model)
        self.ring: Ring = LocalRing()  # joined at the start of run(), once the server answers health checks
        self.replay = ReplayClient(config.replay_address, security=config.client_security())
        self.parameters = ParameterClient(config.parameter_address, security=config.client_security())
        self.step = 0
        self.checkpointed_step = 0
        self.published_version = 0
        self.losses: dict[str, float] = {}
        self.policy_lag = 0.0
        self.policy_lag_updates = 0.0
        self.policy_lag_seconds = 0.0
        # version -> (learner step, monotonic time) at publication, for lag in updates and seconds
        self._published: dict[int, tuple[int, float]] = {}
        self.replay_wait_seconds = 0.0
        self.paused = threading.Event()
        self.stopped = threading.Event()
        self.running = False
        self._loop_done = threading.Event()
        self._loop_done.set()
        self._sampler = None
        self.sources = self.learning.sources(config.batch_size)
        self._mixers = {}  # source table -> its sampler, once the table holds something
        self._rate = RateMeter()
        self.device_clock = DeviceClock(self.device)
        self._checkpoint_path = Path(config.checkpoint_dir) / "learner.pt"
        self._tensorboard = None
        self._lock = threading.Lock()  # guards the model between updates and checkpoints
        self.resume()

    # -- the ring ----------------------------------------------------------------

    def join_ring(self) -> None:
        """Joins the configured ring (blocks until every rank is there) and
        takes rank 0's weights, optimizer state and step."""
        ring = connect(self.config.ring, self.device, self.config.ring_timeout_seconds)
        self.learning.join(ring)
        self.ring = ring
        self.step = self.checkpointed_step = ring.broadcast_state(self.learning, self.step)
        self.learning.updates = self.step
        if ring.size > 1:
            log.info("rank %d of %d (%s) starts at update %d", ring.rank, ring.size, ring.backend, self.step)

    # -- checkpoints -------------------------------------------------------------

    def _spec_record(self) -> dict:
        return self.model_spec.to_dict()

    def resume(self) -> None:
        """Loads the newest checkpoint, if there is one for this model. Every
        rank reads it; joining the ring then makes rank 0's copy win."""
        if not self._checkpoint_path.exists():
            return
        saved = torch.load(self._checkpoint_path, map_location=self.device, weights_only=False)
        if saved["model_spec"] != self._spec_record():
            log.warning("checkpoint %s is for another model; starting afresh", self._checkpoint_path)
            return
        self.learning.load_state_dict(saved["learning"])
        self.learning.updates = saved["step"]  # schedules (learning rate, beta) run on the learner's step
        self.step = self.checkpointed_step = saved["step"]
        log.info("resumed from %s at update %d", self._checkpoint_path, self.step)

    def checkpoint(self) -> Path:
        """Writes the learning half's state (modules, optimizers, targets, counters) and the
        step atomically (temp file, fsync, rename)."""
        path = self._checkpoint_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            state = {
                "learning": self.learning.state_dict(),
                "step": self.step,
                "model_spec": self._spec_record(),
            }
            temporary = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(state, temporary)
            step = self.step
        with open(temporary, "rb") as file:
            os.fsync(file.fileno())
        os.rename(temporary, path)
        self.checkpointed_step = step
        return path

    # -- the loop ----------------------------------------------------------------

    def publish(self) -> int:
        with self._lock:
            data = weights_to_bytes(self.learning.policy())
        self.published_version = version = self.parameters.publish(
            data, wire.model_spec_to_proto(self.model_spec), learner_step=self.step, format=WEIGHTS_FORMAT
        )
        self._published[version] = (self.step, time.monotonic())
        if len(self._published) > 4096:
            del self._published[min(self._published)]
        if self._sampler is not None:  # a queue with max_policy_lag drops what this makes too old
            self._sampler.policy_version = version
        return version

    def _batch_columns(self, batch) -> dict[str, torch.Tensor]:
        return to_device(batch.columns, self.device)

    def _source_table(self, source: Source) -> str:
        return {DEMONSTRATIONS: self.config.demonstrations_table}.get(source.table, source.table)

    def _check_sources(self) -> None:
        """Every table the algorithm draws from besides experience exists on replay."""
        for source in self.sources:
            table = self._source_table(source)
            try:
                self.replay.info([table])
            except NotFoundError:
                wanted = ", ".join(
                    f"{name} {value}"
                    for name, value in (
                        ("pretrain_updates", source.pretrain_updates),
                        ("per_update", source.per_update),
                    )
                    if value
                )
                raise ConfigError(
                    f"{source.table}_table: replay has no table {table!r}, which {self.algorithm.name} draws from "
                    f"({wanted})"
                ) from None

    def pretrain(self) -> dict[str, float]:
        """Each source's ``pretrain_updates`` updates on its table alone (behaviour cloning on the
        demonstrations), before experience. A source whose table is empty (as rank 0 sees it) is
        skipped with a warning."""
        stats: dict[str, float] = {}
        for source in self.sources:
            if not source.pretrain_updates:
                continue
            table = self._source_table(source)
            info = self.replay.info([table])[table]
            if not self.ring.broadcast_object(info.size > 0):  # every rank takes the same branch
                log.warning("%r is empty; skipping the %d updates on it alone", table, source.pretrain_updates)
                continue
            with self.replay.sample(table, batch_size=self.config.batch_size, timeout=0) as sampler:
                for _, batch in zip(range(source.pretrain_updates), sampler):
                    columns = self._batch_columns(batch)
                    with self._lock:
                        terms = source.pretrain(columns)
            stats = {name: float(value) for name, value in terms.items()}
            log.info("%d updates on %r alone (%d items): %s", source.pretrain_updates, table, info.size, stats)
            self.losses = stats
        return stats

    def run(self) -> None:
        self._loop_done.clear()
        try:
            self._run()
        finally:
            self.running = False
            self._loop_done.set()

    def _run(self) -> None:
        self.join_ring()
        root = self.ring.is_root
        self.replay.wait_ready(120)
        if root:
            self.parameters.wait_ready(120)
        self._check_sources()
        self.pretrain()
        if root:
            self.publish()
        if root and self.config.tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tensorboard = SummaryWriter(str(self.config.tensorboard_dir))
        self._check_queue_fits()
        self._sampler = sampler = self.replay.sample(
            self.config.table,
            batch_size=self.config.batch_size,
            max_in_flight=self.config.prefetch,
            timeout=0,  # the learner waits as long as its actors take (it reports the wait as its status)
            importance_sampling_exponent=self.learning.importance_sampling_exponent(),
            policy_version=self.published_version,
        )
        self.running = True
        self.device_clock.restart()
        # with more than one batch drawn ahead, as many wait on the device; with one (on-policy), the
        # next is moved when this thread asks for it, so that none waits converted, older than it must
        batches = DeviceBatches(sampler, self.device, depth=self.config.prefetch if self.config.prefetch > 1 else 0)
        try:
            for batch in batches:
                while self.paused.is_set() and not self.stopped.is_set():
                    time.sleep(0.05)  # on a ring, the other ranks wait in the next allreduce
                stats = self._update(batch)
                sampler.importance_sampling_exponent = self.learning.importance_sampling_exponent()
                self.replay_wait_seconds = sampler.wait_seconds
                finished = bool(self.config.max_updates and self.step >= self.config.max_updates)
                # Every rank reads on the same updates: the step and max_updates are the same on all
                # of them, so the ring's allreduce carries the same terms everywhere (a rank's own
                # stop request must not decide it: the others would send a shorter tensor).
                read = self.step % self.config.stats_every == 0 or finished
                stop, losses = self.ring.agree(
                    self.stopped.is_set() or finished, {n: float(v) for n, v in stats.items()} if read else {}
                )
                if read:
                    self.losses = losses
                if root:
                    self._after_update_on_root()
                if stop:
                    break
        finally:
            sampler.close()
            batches.close()
            for mixer in self._mixers.values():
                mixer.close()

    def _check_queue_fits(self) -> None:
        """A queue hands each item out once and blocks writers when full: a batch larger
        than it could never be drawn."""
        info = self.replay.info([self.config.table])[self.config.table]
        if info.selector in ("fifo", "lifo") and self.config.batch_size > info.max_size:
            raise ConfigError(
                f"batch_size: {self.config.batch_size} items per batch, but queue {self.config.table!r} holds "
                f"{info.max_size}; make the queue larger or the batch smaller"
            )

    def _after_update_on_root(self) -> None:
        if self.step % self.config.publish_every == 0:
            try:
                self.publish()
            except RlringsError as error:  # parameter restarting: the next publish catches up
                log.warning("publishing weights failed: %s", error)
        if self.step % self.config.checkpoint_every == 0:
            self.checkpoint()
        if self._tensorboard is not None and self.step % self.config.stats_every == 0:
            for name, value in self.losses.items():
                self._tensorboard.add_scalar(f"losses/{name}", value, self.step)
            self._tensorboard.add_scalar("charts/learner_steps_per_second", self.steps_per_second(), self.step)
            self._tensorboard.add_scalar("charts/policy_lag_versions", self.policy_lag, self.step)
            self._tensorboard.add_scalar("charts/policy_lag_updates", self.policy_lag_updates, self.step)
            self._tensorboard.add_scalar("charts/policy_lag_seconds", self.policy_lag_seconds, self.step)
            self._tensorboard.add_scalar("charts/replay_wait_seconds", self.replay_wait_seconds, self.step)
            self._tensorboard.add_scalar("charts/device_busy_share", self.device_clock.busy_share(), self.step)

    def _update(self, batch: DeviceBatch) -> dict[str, torch.Tensor | float]:
        """One update; its stats stay tensors (the caller reads them every ``stats_every``)."""
        columns, weights = batch.columns, batch.weights
        for source in self.sources:
            drawn = self._mixed_in(source)
            if drawn is not None:
                columns, weights = source.join(columns, weights, drawn)
        with self._lock, torch.autocast(self.device.type, torch.bfloat16, enabled=self.config.mixed_precision):
            self.device_clock.start()
            update = self.learning.update(columns, weights)
            self.device_clock.stop()
            self.step += 1
        if update.priorities is not None:
            priorities = update.priorities[: len(batch.keys)].cpu().numpy()  # demonstrations keep their own
            try:
                self.replay.update_priorities(self.config.table, batch.keys, priorities)
            except RlringsError as error:  # replay restarting: these items keep their old priority
                log.warning("priority update lost: %s", error)
        self._measure_lag(batch.policy_versions)
        return update.stats

    def _measure_lag(self, versions: np.ndarray) -> None:
        """Lag of the batch's data behind the newest published policy, in versions, updates and seconds."""
        self.policy_lag = float(self.published_version - np.mean(versions))
        known = [self._published[v] for v in versions.tolist() if v in self._published]
        if known:
            now = time.monotonic()
            self.policy_lag_updates = float(self.step - np.mean([step for step, _ in known]))
            self.policy_lag_seconds = float(now - np.mean([at for _, at in known]))

    def _mixed_in(self, source: Source) -> dict[str, torch.Tensor] | None:
        """``source.per_update`` items of its table to join this update's batch, or None (none
        asked, or the table still empty: looked at again every 50 updates)."""
        if not source.per_update:
            return None
        sampler = self._mixers.get(source.table)
        if sampler is None:
            if self.step % 50:
                return None
            table = self._source_table(source)
            if self.replay.info([table])[table].size == 0:
                return None
            sampler = self._mixers[source.table] = self.replay.sample(table, batch_size=source.per_update, timeout=0)
        return self._batch_columns(next(sampler))

    def steps_per_second(self) -> float:
        return self._rate.rate(self.step)

    def close(self) -> None:
        """Stops the loop, writes a last checkpoint (rank 0) and leaves the ring.

        The loop first gets a few seconds to stop after an update on which all
        ranks agreed; a rank still waiting for a batch then has its sampler
        closed, and a rank still waiting for its peers has the ring closed
        under it. The model is never half-updated: an update that fails in
        the ring fails before the optimizer steps.
        """
        self.stopped.set()
        if not self._loop_done.wait(5) and self._sampler is not None:
            self._sampler.close()
        if not self._loop_done.wait(30):
            log.warning("the training loop is still waiting for the ring; leaving it")
            self.ring.close()
            self._loop_done.wait(10)
        if self.ring.is_root and self._loop_done.is_set() and self.step > self.checkpointed_step:
            self.checkpoint()
        if self._tensorboard is not None:
            self._tensorboard.close()
        self.ring.close()
        self.replay.close()
        self.parameters.close()

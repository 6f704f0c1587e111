"""The viewer's domain: episodes stepped for a person, frames, and recording.

A :class:`Session` runs one environment for one viewer, in one of two modes:
``watch`` (the newest published policy acts) or ``play`` (the viewer's keys
act). Every step gives a :class:`Frame`. In play mode each finished episode is
written to replay's demonstrations table; an episode cut short (the viewer
left) is written too, its last step marked truncated, so nothing played is
lost and nothing unfinished passes for a real ending.
"""

from __future__ import annotations

import io
import itertools
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from rlrings.clients.parameter import ParameterClient, WeightsFollower
from rlrings.clients.replay import ReplayClient
from rlrings.core.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    RlringsError,
)
from rlrings.core.models import Policy, build_model, load_weights
from rlrings.core.spaces import Discrete
from rlrings.envs import env_spec, import_renderers, make_env
from rlrings.rpc import wire
from rlrings.services.viewer.config import ViewerConfig
from rlrings.services.viewer.keymaps import ContinuousKeyMap, KeyMap, continuous_keymap_for, keymap_for

log = logging.getLogger(__name__)
_CHUNK_STEPS = 64
_ACTION_NAMES = {"CartPole-v1": ["push left", "push right"], "CartPole-v0": ["push left", "push right"]}


@dataclass
class Frame:
    image: bytes
    media_type: str
    step: int
    reward: float
    episode_return: float
    terminated: bool
    truncated: bool
    policy_version: int
    action: int
    episode: int
    action_values: tuple[float, ...] = ()
    """A Box action's elements (empty for a Discrete one)."""


@dataclass
class Demonstration:
    episode_id: int
    env_id: str
    steps: int
    episode_return: float
    truncated: bool


class Viewer:
    """Everything the page and the gRPC service share."""

    def __init__(self, config: ViewerConfig):
        self.config = config
        import_renderers()  # here, before the sessions' threads render at once; the same for
        encode_image(np.zeros((1, 1, 3), np.uint8), config.frame_format, config.max_frame_width)  # PIL's codecs
        self.spec = env_spec(config.env)
        self.keymap: KeyMap | None = None
        self.continuous: ContinuousKeyMap | None = None
        self.unplayable = ""  # why play is refused, where it is
        if isinstance(self.spec.action_space, Discrete):
            self.keymap = keymap_for(self.spec)
        else:
            try:
                self.continuous = continuous_keymap_for(self.spec)
            except ValueError as error:  # watched, not played
                self.unplayable = str(error)
        self.replay = ReplayClient(config.replay_address, security=config.client_security())
        self.parameters = ParameterClient(config.parameter_address, security=config.client_security())
        self.follower = WeightsFollower(self.parameters)
        self.demonstrations: list[Demonstration] = []
        self._episode_ids = itertools.count(int(time.time() * 1000))
        self._slots = threading.BoundedSemaphore(config.max_viewers)
        self._policy: Policy | None = None
        self._lock = threading.Lock()
        self.open_sessions: dict[str, int] = {}
        self._by_client: dict[str, int] = {}  # open sessions per client
        self.frames_rendered = 0

    def environments(self) -> list[dict]:
        return [
            {
                "env_id": self.spec.env_id,
                "discrete": isinstance(self.spec.action_space, Discrete),
                "actions": list(self.spec.action_names)
                or _ACTION_NAMES.get(
                    self.spec.env_id, [str(i) for i in range(getattr(self.spec.action_space, "n", 0))]
                ),
                "keys": self.keymap.keys
                if self.keymap is not None
                else (self.continuous.keys if self.continuous is not None else {}),
            }
        ]

    def open(self, env_id: str, mode: str, seed: int = 0, client: str = "") -> Session:
        """A new session for ``client`` (who asks: a token's name or an address), or an error naming
        what is wrong."""
        if env_id != self.spec.env_id:
            raise NotFoundError(f"env_id: {env_id!r} is not served here; environments: [{self.spec.env_id!r}]")
        if mode not in ("watch", "play"):
            raise InvalidArgumentError(f"mode: {mode!r}; use 'watch' or 'play'")
        if mode == "play" and self.keymap is None and self.continuous is None:
            raise FailedPreconditionError(f"mode: play needs a key map: {self.unplayable}")
        with self._lock:
            held = self._by_client.get(client, 0)
            if held >= self.config.max_sessions_per_client:
                raise ResourceExhaustedError(
                    f"viewer limit of {self.config.max_sessions_per_client} sessions per client reached "
                    f"({client[:64]!r} has {held} open); close one first"
                )
            if not self._slots.acquire(blocking=False):
                raise ResourceExhaustedError(
                    f"viewer limit of {self.config.max_viewers} reached; try again when someone leaves"
                )
            self._by_client[client] = held + 1
        try:
            session = Session(self, mode, seed, client)
        except BaseException:
            self._forget(client)
            raise
        with self._lock:
            self.open_sessions[mode] = self.open_sessions.get(mode, 0) + 1
        return session

    def _forget(self, client: str) -> None:
        with self._lock:
            self._by_client[client] -= 1
            if not self._by_client[client]:
                del self._by_client[client]
        self._slots.release()

    def policy(self) -> Policy | None:
        """The newest published policy, rebuilt when a new version arrives."""
        latest = self.follower.latest()
        if latest is None:
            return None
        header, data = latest
        with self._lock:
            if self._policy is None or self._policy.version != header.version:
                spec = wire.model_spec_from_proto(header.model)
                model = build_model(spec)
                load_weights(model, data)
                self._policy = Policy(spec, model, header.version)
            return self._policy

    def record(self, steps: dict[str, list], episode_return: float, truncated: bool) -> Demonstration:
        """Writes one played episode to the demonstrations table."""
        episode_id = next(self._episode_ids)
        count = len(steps["action"])
        columns = {
            "obs": np.stack(steps["obs"]).astype(self.spec.observation_space.dtype),
            "action": np.asarray(steps["action"], self.spec.action_space.dtype),
            "reward": np.asarray(steps["reward"], np.float32),
            "next_obs": np.stack(steps["next_obs"]).astype(self.spec.observation_space.dtype),
            "terminated": np.asarray(steps["terminated"], bool),
            "truncated": np.asarray(steps["truncated"], bool),
        }
        with self.replay.writer(self.config.demonstrations_table, chunk_length=_CHUNK_STEPS) as writer:
            for start in range(0, count, _CHUNK_STEPS):
                piece = {name: value[start : start + _CHUNK_STEPS] for name, value in columns.items()}
                writer.write_chunk(piece, episode_id=episode_id, first_step=start)
        demonstration = Demonstration(episode_id, self.spec.env_id, count, episode_return, truncated)
        self.demonstrations.append(demonstration)
        return demonstration

    def release(self, mode: str, client: str = "") -> None:
        with self._lock:
            self.open_sessions[mode] -= 1
        self._forget(client)

    def close(self) -> None:
        self.follower.close()
        self.replay.close()
        self.parameters.close()


class Session:
    """One viewer's episode loop. Ticks come from one thread at a time; :meth:`close` may come from
    another (a page that left while its tick ran in an executor): a lock makes it wait for the tick
    in flight, and a tick after the close is refused, so the env is never closed under a step and
    the episode recorded is never half-written."""

    def __init__(self, viewer: Viewer, mode: str, seed: int, client: str = ""):
        self.viewer, self.mode, self.client = viewer, mode, client
        self.last_input = time.monotonic()
        self.keymap: KeyMap | None = viewer.keymap
        self.continuous: ContinuousKeyMap | None = viewer.continuous
        self.held_keys: list[str] = []  # continuous play: keys down, in the order pressed
        self.commanded: np.ndarray | None = None  # a gRPC client's Box action for the next tick
        self.env = make_env(viewer.spec.env_id, render_mode="rgb_array")
        self.seed = seed
        self.episode = 0
        self.pending: list[int] = []  # taps since the last tick
        self.held: list[int] = []
        self.last_action = self.continuous.rest() if self.continuous is not None else 0
        self.closed = False
        self._stepping = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.obs, _ = self.env.reset(seed=self.seed + self.episode)
        self.episode += 1
        self.step_index, self.episode_return = 0, 0.0
        self.steps: dict[str, list] = {
            k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")
        }

    # -- input -----------------------------------------------------------------

    def key(self, key: str, down: bool) -> None:
        """A key went down or up. Keys outside the map raise InvalidArgumentError."""
        self.last_input = time.monotonic()
        if self.continuous is not None:
            if not self.continuous.knows(key):
                raise InvalidArgumentError(f"key {key!r} is not mapped; keys: {sorted(self.continuous.keys)}")
            key = key if len(key) > 1 else key.lower()
            if key in self.held_keys:
                self.held_keys.remove(key)
            if down:
                self.held_keys.append(key)
            return
        action = self.keymap.action(key)
        if action is None:
            raise InvalidArgumentError(f"key {key!r} is not mapped; keys: {sorted(self.keymap.keys)}")
        if down:
            self.pending.append(action)
            if action not in self.held:
                self.held.append(action)
        elif action in self.held:
            self.held.remove(action)

    def _next_action(self) -> tuple[int | np.ndarray, int]:
        """(action, policy version) for this tick."""
        if self.mode == "watch":
            policy = self.viewer.policy()
            if policy is None:
                sample = self.env.action_space.sample()
                return (int(sample) if isinstance(self.viewer.spec.action_space, Discrete) else sample), 0
            return policy.act(self.obs), policy.version
        if self.commanded is not None:
            action, self.commanded = self.commanded, None
            return action, 0
        if self.continuous is not None:  # ramps towards the keys held, back to rest without
            return self.continuous.step(self.last_action, self.held_keys), 0
        if self.pending:
            return self.pending.pop(0), 0
        if self.held:
            return self.held[-1], 0
        return (self.last_action if self.keymap.idle == "repeat" else int(self.keymap.idle)), 0

    def command(self, action: int | np.ndarray) -> None:
        """The action of the next tick, from a gRPC client (checked by the caller)."""
        self.last_input = time.monotonic()
        if isinstance(action, np.ndarray):
            self.commanded = action
        else:
            self.pending.append(action)

    # -- stepping ----------------------------------------------------------------

    def first_frame(self) -> Frame:
        with self._stepping:
            self._check_open()
            return self._frame(0.0, False, False, 0, self.last_action)

    def tick(self) -> Frame:
        """Steps once; records and resets when the episode ends.

        Raises:
            FailedPreconditionError: the session was closed.
        """
        with self._stepping:
            self._check_open()
            return self._tick()

    def _check_open(self) -> None:
        if self.closed:
            raise FailedPreconditionError("the session is closed")

    def _tick(self) -> Frame:
        action, version = self._next_action()
        self.last_action = action
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self.step_index += 1
        self.episode_return += float(reward)
        if self.mode == "play":
            for name, value in (("obs", self.obs), ("action", action), ("reward", reward), ("next_obs", next_obs),
                                ("terminated", terminated), ("truncated", truncated)):  # fmt: skip
                self.steps[name].append(value)
        self.obs = next_obs
        frame = self._frame(float(reward), bool(terminated), bool(truncated), version, action)
        if terminated or truncated:
            self._finish(truncated=bool(truncated) and not terminated)
            self._reset()
        return frame

    def _finish(self, truncated: bool) -> Demonstration | None:
        if self.mode != "play" or not self.steps["action"]:
            return None
        if truncated:
            self.steps["truncated"][-1] = True
        try:
            return self.viewer.record(self.steps, self.episode_return, truncated)
        except RlringsError as error:
            log.warning("could not store a played episode of %d steps: %s", len(self.steps["action"]), error)
            return None

    def _frame(self, reward, terminated, truncated, version, action) -> Frame:
        image = self.env.render()
        self.viewer.frames_rendered += 1
        return Frame(
            image=encode_image(image, self.viewer.config.frame_format, self.viewer.config.max_frame_width),
            media_type=f"image/{self.viewer.config.frame_format}",
            step=self.step_index,
            reward=reward,
            episode_return=self.episode_return,
            terminated=terminated,
            truncated=truncated,
            policy_version=version,
            action=int(action) if np.ndim(action) == 0 else 0,  # a continuous action has no index
            episode=self.episode,
            action_values=tuple(round(float(v), 4) for v in np.ravel(action)) if np.ndim(action) else (),
        )

    def close(self) -> None:
        """Ends the session; a played episode cut short is stored marked truncated."""
        with self._stepping:
            if self.closed:
                return
            self.closed = True
            try:
                self._finish(truncated=True)
            finally:
                self.env.close()
                self.viewer.release(self.mode, self.client)

    @property
    def idle(self) -> bool:
        """A played session whose player has pressed nothing for ``play_idle_seconds``."""
        return self.mode == "play" and time.monotonic() - self.last_input > self.viewer.config.play_idle_seconds


def encode_image(image: np.ndarray, fmt: str, max_width: int) -> bytes:
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if picture.width > max_width:
        picture = picture.resize((max_width, round(picture.height * max_width / picture.width)))
    elif picture.width < 256:  # 64x64 game frames: scale up, keep the pixels sharp
        factor = 256 // picture.width
        picture = picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG" if fmt == "jpeg" else "PNG", quality=85)
    return buffer.getvalue()

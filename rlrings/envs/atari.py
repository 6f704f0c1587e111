"""Atari 2600 games through the Arcade Learning Environment (``ale-py``, whose wheels ship the
ROMs), preprocessed as the field trains and scores them.

Ids are Gymnasium's, ``ALE/<Game>-v5`` (``ALE/Pong-v5``, ``ALE/Breakout-v5``), with options
after ``?``: ``ALE/Pong-v5?sticky=0.25`` repeats the previous action with that probability
(Machado et al., 2018; off by default, as in the Nature DQN and IMPALA set-ups), and
``?vector=wrappers`` makes actors step these wrappers instead of ale-py's C++ vector env
(:data:`VECTORS`).

The pipeline, bottom up (each a wrapper below, tested on hand-made frames):

1. :class:`GameScore` sums the game's own rewards and, when the game ends, reports the
   **raw score** in ``info['raw_score']`` (and its length in agent steps in ``info['game_steps']``);
2. :class:`NoopReset`: up to 30 no-ops after a reset, so episodes do not all start alike;
3. :class:`MaxAndSkip`: each action is repeated 4 frames; the observation is the pixel-wise
   maximum of the last two (Atari sprites flicker between frames); rewards are summed;
4. :class:`EpisodicLife` (training only): a lost life ends the episode for the learner
   (``terminated``), while the game goes on; a reset after it only continues the game;
5. :class:`FireReset`: games that wait for FIRE to serve (Breakout) get it after a reset and a
   lost life;
6. :class:`Resize`: ALE's grayscale screen to 84x84 (area interpolation, as ale-py's C++ env);
7. :class:`ClipReward` (training only): rewards become their sign;
8. :class:`FrameStack`: the last 4 frames on the channel axis, 84x84x4 uint8.

Contract: with ``training=True`` (actors), episodes end at every life lost and rewards are
clipped; otherwise (the evaluator, the viewer, ``rlrings render``) an episode is the whole game
and its return is the raw score. Either way ``info['raw_score']`` arrives at the step that ends
the game, which is what the actor's metrics and ``summary.json`` report. The game's own limit
(108,000 frames, 30 minutes of play) is ``truncated``.
"""

from __future__ import annotations

import collections
import difflib
import urllib.parse

import gymnasium as gym
import numpy as np

from rlrings.core.errors import ConfigError

HAS_TRAINING_MODE = True
"""The registry passes ``training`` to :func:`make` (episodic life and clipped rewards when True)."""

FRAME_SKIP = 4
FRAME_SIZE = 84
STACK = 4
NOOP_MAX = 30
MAX_FRAMES = 108_000  # ALE frames per game (30 min at 60 Hz): the v5 envs' own limit

OPTIONS = {"sticky": float, "vector": str}
"""Options an id may carry after ``?``, with their types."""


class GameScore(gym.Wrapper):
    """Reports the raw score and length of each whole game in ``info`` at the step that ends it."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.score, self.steps = 0.0, 0

    def reset(self, **kwargs):
        self.score, self.steps = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.score += float(reward)
        self.steps += 1
        if terminated or truncated:
            info = {**info, "raw_score": self.score, "game_steps": self.steps}
        return obs, reward, terminated, truncated, info


class NoopReset(gym.Wrapper):
    """After a reset, 1 to ``noop_max`` no-op actions (action 0), drawn from the env's generator."""

    def __init__(self, env: gym.Env, noop_max: int = NOOP_MAX):
        super().__init__(env)
        self.noop_max = noop_max

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for _ in range(int(self.np_random.integers(1, self.noop_max + 1))):
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class MaxAndSkip(gym.Wrapper):
    """Repeats each action ``skip`` frames; returns the maximum of the last two frames and the
    sum of the rewards, stopping early where the game ends."""

    def __init__(self, env: gym.Env, skip: int = FRAME_SKIP):
        super().__init__(env)
        self.skip = skip

    def step(self, action):
        total, last, previous = 0.0, None, None
        terminated = truncated = False
        info: dict = {}
        for _ in range(self.skip):
            obs, reward, terminated, truncated, info = self.env.step(action)
            previous, last = last, obs
            total += float(reward)
            if terminated or truncated:
                break
        frame = last if previous is None else np.maximum(previous, last)
        return frame, total, terminated, truncated, info


class EpisodicLife(gym.Wrapper):
    """A lost life ends the episode (``terminated``) for the learner; the next reset continues
    the game with one no-op, unless the game itself had ended."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def _lives(self, info: dict) -> int:
        return int(info.get("lives", 0))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self._lives(info)
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:  # the no-op ended the game: start a new one
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self._lives(info)
        return obs, info


class FireReset(gym.Wrapper):
    """Presses FIRE (then the next action, as games that serve on release need) after a reset and
    after a lost life that did not end the episode, for games whose action set has FIRE as action
    1. In training a lost life ends the episode and the reset fires; scored whole games fire in
    the step, so that a greedy policy that never learnt to serve does not stall a game until its
    30-minute limit."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0

    def _fire(self, **kwargs):
        obs, info, total = None, {}, 0.0
        for action in (1, 2):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                return obs, total, terminated, truncated, info
        return obs, total, False, False, info

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        fired, _, terminated, truncated, fired_info = self._fire()
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, info = fired, fired_info
        self.lives = int(info.get("lives", 0))
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = int(info.get("lives", 0))
        if lives < self.lives and not (terminated or truncated):
            obs, more, terminated, truncated, info = self._fire()
            reward = float(reward) + more
            lives = int(info.get("lives", 0))
        self.lives = lives
        return obs, reward, terminated, truncated, info


def _area_weights(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in]: each output pixel the mean of the input pixels it covers, a pixel cut
    by its edge counting by the part inside (area interpolation)."""
    scale = size_in / size_out
    edges = np.arange(size_out + 1) * scale
    pixels = np.arange(size_in)
    covered = np.minimum(edges[1:, None], pixels[None, :] + 1) - np.maximum(edges[:-1, None], pixels[None, :])
    return (np.clip(covered, 0.0, None) / scale).astype(np.float32)


class Resize(gym.ObservationWrapper):
    """Grayscale HxW frames to ``size`` x ``size`` by area interpolation, uint8: the resize
    ale-py's C++ vector env does, so the actors' frames (:mod:`rlrings.envs.ale_vector`) and the
    viewer's and `rlrings render`'s (these wrappers) are the same to within one grey level."""

    def __init__(self, env: gym.Env, size: int = FRAME_SIZE):
        super().__init__(env)
        self.size = size
        height, width = env.observation_space.shape[:2]
        self.rows, self.columns = _area_weights(height, size), _area_weights(width, size).T.copy()
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)

    def observation(self, frame: np.ndarray) -> np.ndarray:
        resized = self.rows @ frame.astype(np.float32) @ self.columns
        return np.clip(np.rint(resized), 0, 255).astype(np.uint8)


class ClipReward(gym.RewardWrapper):
    """Rewards as their sign (-1, 0, 1), so one learning rate suits every game."""

    def reward(self, reward: float) -> float:
        return float(np.sign(reward))


class FrameStack(gym.Wrapper):
    """The last ``stack`` frames on a trailing channel axis (HxWxC, as every image model here
    takes frames); a reset fills the stack with its first frame."""

    def __init__(self, env: gym.Env, stack: int = STACK):
        super().__init__(env)
        height, width = env.observation_space.shape
        self.frames: collections.deque = collections.deque(maxlen=stack)
        self.observation_space = gym.spaces.Box(0, 255, (height, width, stack), np.uint8)

    def _stacked(self) -> np.ndarray:
        return np.stack(self.frames, axis=-1)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for _ in range(self.frames.maxlen):
            self.frames.append(obs)
        return self._stacked(), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.frames.append(obs)
        return self._stacked(), reward, terminated, truncated, info


VECTOR_MODULE = "rlrings.envs.ale_vector"
"""The module whose ``make_vector`` makes actors' vectors of these games (the registry asks it)."""

VECTORS = {"ale", "wrappers"}
"""How actors step a vector of a game (``?vector=``): ``ale``, ale-py's C++ vector env
(:mod:`rlrings.envs.ale_vector`, the default); ``wrappers``, these wrappers in Gymnasium's
SyncVectorEnv, one game after the other in Python."""


def game_ids() -> list[str]:
    """Every game ale-py ships, as ``ALE/<Game>-v5`` ids."""
    import ale_py

    gym.register_envs(ale_py)
    return sorted(name for name in gym.registry if name.startswith("ALE/") and name.endswith("-v5"))


def parse(name: str) -> tuple[str, dict]:
    """``ALE/Pong-v5?sticky=0.25`` -> (``ALE/Pong-v5``, ``{"sticky": 0.25}``); unknown games and
    options are ConfigErrors naming what is known."""
    game, _, query = name.partition("?")
    options = {}
    for key, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        if key not in OPTIONS:
            raise ConfigError(f"env {name!r}: unknown option {key!r}; options: {sorted(OPTIONS)}")
        try:
            options[key] = OPTIONS[key](values[-1])
        except ValueError:
            raise ConfigError(f"env {name!r}: option {key}={values[-1]!r} is not a {OPTIONS[key].__name__}") from None
    if not 0.0 <= options.get("sticky", 0.0) < 1.0:
        raise ConfigError(f"env {name!r}: sticky is a probability in [0, 1)")
    if options.get("vector", "ale") not in VECTORS:
        raise ConfigError(f"env {name!r}: vector={options['vector']!r}; one of {sorted(VECTORS)}")
    known = game_ids()
    if game not in known:
        close = difflib.get_close_matches(game, known, n=3)
        raise ConfigError(
            f"env: unknown Atari game {game!r}"
            + (f"; did you mean {close}?" if close else "")
            + f'; ale-py ships {len(known)} games, listed by: python -c "import rlrings.envs.atari as a; '
            'print(a.game_ids())"'
        )
    return game, options


SOLVED = {"ALE/Pong-v5": 18.0}
"""Solved definitions the field uses (the mean raw score over 100 evaluation games): Pong's games
end at 21 points, so 18 is winning about 21-3. Games without one train to their budget."""


def solved_threshold(name: str) -> float | None:
    """The game's solved score, sticky actions (``?sticky=P``) or not."""
    return SOLVED.get(name.split("?")[0])


BEST_RETURNS = {"ALE/Pong-v5": 21.0}
"""The most a whole game can score, where the game bounds it (Pong ends at 21 points)."""


def best_return(name: str) -> float | None:
    return BEST_RETURNS.get(name.split("?")[0])


def make(name: str, training: bool = False, render_mode: str | None = "rgb_array", **kwargs) -> gym.Env:
    """``ALE/<Game>-v5[?sticky=p]``; ``training`` adds episodic life and reward clipping."""
    game, options = parse(name)
    env = gym.make(
        game,
        frameskip=1,
        repeat_action_probability=options.get("sticky", 0.0),
        obs_type="grayscale",
        max_num_frames_per_episode=MAX_FRAMES,
        render_mode=render_mode,
    )
    env = GameScore(env)
    env = NoopReset(env)
    env = MaxAndSkip(env)
    if training:
        env = EpisodicLife(env)
    if "FIRE" in env.unwrapped.get_action_meanings()[1:2]:
        env = FireReset(env)
    env = Resize(env)
    if training:
        env = ClipReward(env)
    env = FrameStack(env)
    env.metadata = {
        **env.metadata,
        "rlrings.game_score": True,
        "rlrings.architecture": "nature",
        "rlrings.frame_skip": FRAME_SKIP,
    }
    return env


def factory(name: str):
    """Checks the id once, up front (an unknown game fails before any copy is made)."""
    parse(name)
    return lambda **kwargs: make(name, **kwargs)

"""Atari through ale-py's C++ vector env, with the contract of :mod:`rlrings.envs.atari`.

Actors spend most of their time stepping envs, and the evaluator must play whole games as fast as
the learner publishes versions; ale-py's ``AtariVectorEnv`` steps a vector of
games in C++ threads, without Python's lock, doing the same preprocessing as the wrappers of
:mod:`rlrings.envs.atari` (4-frame skip with the maximum of the last two, 84x84 grayscale by
area resize, 4 stacked frames, up to 30 no-ops after a reset, FIRE after a reset where the game
has it, sticky actions, the 108,000-frame limit as ``truncated``). This module keeps what that
env does not do the way the rest of rlrings expects:

- frames come channels last (N, 84, 84, 4), as every image model here takes them, stacked
  here as :class:`rlrings.envs.atari.FrameStack` stacks them (ale-py's own stack starts a new
  episode with three black frames; here a new episode's stack is its first frame four times);
- rewards come back raw from C++; in training they are clipped to their sign here, and the raw
  sum of each whole game is reported in ``info['final_info']['raw_score']`` (with
  ``game_steps`` and their ``_`` masks, as Gymnasium's vector envs report a sub-env's info) at
  the step that ends the game, as :class:`rlrings.envs.atari.GameScore` does;
- in training a lost life ends the learner's episode (``terminated``) while the game goes on;
  a terminal that is a lost life and one that is a game over are told apart by the lives;
- SAME_STEP autoreset, the last observation of an ended episode in ``info['final_obs']``.

Two differences from the wrappers remain, written here so nobody meets them unawares. At a time
limit (108,000 frames, 30 minutes of play) the last frame ale-py 0.12.1 hands back differs from
the wrappers' in a few pixels (the ball's and paddles'; the rest of the picture is the same); only
the learner's value bootstrap at that limit reads it. And the C++ env presses no FIRE after a lost
life. In training the agent serves itself (FIRE is one of its actions; the wrappers fire at the
reset that follows the lost life's episode end). Scored whole games (the evaluator's) must not
stall on a greedy policy that never learnt to serve, so there the two actions after a lost life
are FIRE and then action 2, as the wrappers press them, in the steps the policy would have taken
(the wrappers press them inside the step that lost the life, so the policy never sees those two
frames; here it sees them and its choices are overruled).
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from rlrings.envs import atari


class AleVector(gym.vector.VectorEnv):
    """``num_envs`` copies of an ``ALE/<Game>-v5`` game (options as :func:`atari.parse` reads
    them) stepped by ale-py in ``threads`` C++ threads (0: one per env, up to the cores this process
    may run on);
    ``max_frames``: the game's limit in emulator frames (tests shorten it)."""

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(
        self, name: str, num_envs: int, training: bool = False, threads: int = 0, max_frames: int = atari.MAX_FRAMES
    ):
        from ale_py.vector_env import AtariVectorEnv

        game, options = atari.parse(name)
        self.name, self.training, self.num_envs = name, training, num_envs
        self.threads = threads or min(num_envs, len(os.sched_getaffinity(0)))
        self._env = AtariVectorEnv(
            gym.spec(game).kwargs["game"],
            num_envs,
            num_threads=self.threads,
            autoreset_mode="SameStep",
            max_num_frames_per_episode=max_frames,
            repeat_action_probability=options.get("sticky", 0.0),
            img_height=atari.FRAME_SIZE,
            img_width=atari.FRAME_SIZE,
            grayscale=True,
            stack_num=1,  # stacked here: a new episode's stack is its first frame four times
            frameskip=atari.FRAME_SKIP,
            maxpool=True,
            noop_max=atari.NOOP_MAX,
            episodic_life=False,
            life_loss_info=training,
            reward_clipping=False,
            use_fire_reset=True,  # only games whose action 1 is FIRE get it
        )
        frame = (atari.FRAME_SIZE, atari.FRAME_SIZE, atari.STACK)
        self.single_observation_space = gym.spaces.Box(0, 255, frame, np.uint8)
        self.single_action_space = gym.spaces.Discrete(int(self._env.single_action_space.n))
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._stack = np.zeros((num_envs, *frame), np.uint8)
        self._lives = np.zeros(num_envs, np.int64)
        # scored games serve after a lost life: FIRE, then action 2 (FireReset's pair)
        self._serves = not training and self._env.ale.get_action_set()[1].name == "FIRE"
        self._serving = np.zeros(num_envs, np.int64)  # steps of that pair each env has left
        self._score = np.zeros(num_envs)
        self._steps = np.zeros(num_envs, np.int64)

    @staticmethod
    def _moved_on(stacks: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """New stacks: each of ``stacks`` with its oldest frame dropped and its env's frame from
        ``frames`` ([N, 1, H, W], as ale-py hands them) added as the newest."""
        return np.concatenate([stacks[..., 1:], frames[:, 0, :, :, None]], axis=-1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        frames, info = self._env.reset(seed=seed, options=options)
        self._stack = np.repeat(frames[:, 0, :, :, None], atari.STACK, axis=-1)  # the first frame, four times
        self._lives = np.asarray(info["lives"], np.int64).copy()
        self._serving[:] = 0
        self._score[:] = 0.0
        self._steps[:] = 0
        return self._stack.copy(), {"lives": self._lives.copy()}

    def step(self, actions):
        actions = np.asarray(actions, np.int32)
        if self._serving.any():  # FIRE, then action 2, in place of the policy's
            actions = np.where(self._serving == 2, 1, np.where(self._serving == 1, 2, actions)).astype(np.int32)
            self._serving = np.maximum(self._serving - 1, 0)
        frames, rewards, terminated, truncated, ale_info = self._env.step(actions)
        order = np.asarray(ale_info["env_id"])
        if (order != np.arange(self.num_envs)).any():  # (a full batch comes in env order; kept so if not)
            back = np.argsort(order)
            frames, rewards, terminated, truncated = frames[back], rewards[back], terminated[back], truncated[back]
            ale_info = {key: np.asarray(value)[back] for key, value in ale_info.items()}
        lives = np.asarray(ale_info["lives"], np.int64)
        rewards = rewards.astype(np.float64)
        ended = terminated | truncated
        # after a game over the env is already in the next game: its lives are back up (or stay 0)
        life_lost = terminated & ~truncated & (lives < self._lives)
        game_over = ended & ~life_lost
        self._score += rewards
        self._steps += 1
        info: dict = {"lives": lives.copy()}
        if ended.any():
            info["final_obs"] = self._moved_on(self._stack, ale_info["final_obs"])
            info["_final_obs"] = ended
            info["final_info"] = {
                "raw_score": np.where(game_over, self._score, 0.0),
                "_raw_score": game_over,
                "game_steps": np.where(game_over, self._steps, 0),
                "_game_steps": game_over,
            }
            info["_final_info"] = ended
            self._score[game_over] = 0.0
            self._steps[game_over] = 0
        self._stack = self._moved_on(self._stack, frames)  # a new array: the one returned last is left as it was
        self._stack[ended] = frames[ended, 0, :, :, None]  # a new episode: its first frame, four times
        if self._serves:
            self._serving[(lives < self._lives) & ~ended] = 2
            self._serving[ended] = 0
        self._lives = lives.copy()
        if self.training:
            rewards = np.sign(rewards)
        return self._stack, rewards, terminated, truncated, info

    def close_extras(self, **kwargs) -> None:
        self._env.close()


def make_vector(name: str, num_envs: int, training: bool = False, threads: int = 0) -> gym.vector.VectorEnv | None:
    """A vector of ``name``: this C++ one, for actors (``training``) and for the evaluator's scored
    games alike; None where the id asks for ``?vector=wrappers`` leaves it to the registry's
    SyncVectorEnv of the wrappers. ``threads``: C++ threads stepping them (0: one per env, up to
    the cores)."""
    _, options = atari.parse(name)
    if options.get("vector", "ale") != "ale":
        return None
    return AleVector(name, num_envs, training=training, threads=threads)

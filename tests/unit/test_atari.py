"""Atari preprocessing, wrapper by wrapper, on a hand-made game whose frames, rewards and lives
are known; then the real pipeline on ale-py, the image torsos on every frame size, and the
learner's device prefetcher."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrings.core.errors import ConfigError
from rlrings.core.models import ModelSpec, build_model
from rlrings.envs import atari, env_spec, make_env, make_vector_env
from rlrings.services.learner.prefetch import DeviceBatches


class ScriptedGame(gym.Env):
    """Frame i is filled with i (or ``frames[i]``); rewards and lives follow the script; the game
    ends after ``length`` frames. Records every action it is given."""

    metadata = {"render_modes": []}

    def __init__(self, length=40, rewards=None, lives=None, frames=None, shape=(6, 4)):
        self.length, self.shape = length, shape
        self.rewards = rewards or {}
        self.lives = lives or {}
        self.frames = frames or {}
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        self.action_space = gym.spaces.Discrete(4)
        self.actions: list[int] = []
        self.resets = 0

    def _frame(self):
        return self.frames.get(self.t, np.full(self.shape, self.t % 256, np.uint8))

    def _info(self):
        return {"lives": self.lives.get(self.t, 0)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.resets = 0, self.resets + 1
        return self._frame(), self._info()

    def step(self, action):
        self.actions.append(int(action))
        self.t += 1
        return self._frame(), float(self.rewards.get(self.t, 0.0)), self.t >= self.length, False, self._info()

    def get_action_meanings(self):
        return ["NOOP", "FIRE", "RIGHT", "LEFT"]


def test_game_score_reports_the_raw_score_and_length_when_the_game_ends():
    env = atari.GameScore(ScriptedGame(length=5, rewards={2: 3.0, 4: -1.0}))
    env.reset()
    infos = [env.step(0)[-1] for _ in range(5)]
    assert all("raw_score" not in info for info in infos[:4])
    assert infos[4]["raw_score"] == 2.0 and infos[4]["game_steps"] == 5


def test_noop_reset_takes_between_one_and_noop_max_noops():
    game = ScriptedGame(length=1000)
    env = atari.NoopReset(game, noop_max=5)
    counts = set()
    for seed in range(30):
        game.actions.clear()
        obs, _ = env.reset(seed=seed)
        counts.add(len(game.actions))
        assert set(game.actions) == {0} and obs[0, 0] == len(game.actions)
    assert counts <= set(range(1, 6)) and len(counts) >= 3


def test_max_and_skip_repeats_the_action_sums_rewards_and_max_pools_the_last_two_frames():
    flicker = {3: np.array([[9, 0], [0, 0]], np.uint8), 4: np.array([[0, 0], [0, 7]], np.uint8)}
    game = ScriptedGame(length=100, rewards={1: 1.0, 3: 2.0, 6: 5.0}, frames=flicker, shape=(2, 2))
    env = atari.MaxAndSkip(game, skip=4)
    env.reset()
    obs, reward, *_ = env.step(2)
    assert game.actions == [2, 2, 2, 2] and reward == 3.0
    np.testing.assert_array_equal(obs, [[9, 0], [0, 7]])  # the sprites of frames 3 and 4 both show


def test_max_and_skip_stops_where_the_game_ends():
    game = ScriptedGame(length=6, rewards={6: 1.0})
    env = atari.MaxAndSkip(game, skip=4)
    env.reset()
    env.step(0)
    obs, reward, terminated, *_ = env.step(0)
    assert len(game.actions) == 6 and terminated and reward == 1.0 and obs[0, 0] == 6


def test_episodic_life_ends_the_episode_at_a_lost_life_and_continues_the_game():
    lives = {t: 3 if t < 5 else 2 for t in range(20)}
    game = ScriptedGame(length=20, lives=lives)
    env = atari.EpisodicLife(game)
    env.reset()
    ends = [env.step(0)[2] for _ in range(5)]
    assert ends == [False, False, False, False, True]
    obs, _ = env.reset()  # a life, not the game: one no-op, no real reset
    assert game.resets == 1 and obs[0, 0] == 6
    while not env.step(0)[2]:
        pass
    env.reset()  # the game itself ended: a real reset
    assert game.resets == 2


def test_fire_reset_presses_fire_then_moves_after_a_reset_and_after_a_lost_life():
    game = ScriptedGame(length=30, lives={t: 3 if t < 6 else 2 for t in range(40)}, rewards={7: 1.0})
    env = atari.FireReset(game)
    obs, _ = env.reset()
    assert game.actions == [1, 2] and obs[0, 0] == 2
    for _ in range(3):
        env.step(3)
    obs, reward, terminated, *_ = env.step(3)  # frame 6 loses a life: FIRE and move follow in the same step
    assert game.actions[-3:] == [3, 1, 2] and obs[0, 0] == 8 and reward == 1.0 and not terminated
    env.step(3)
    assert game.actions[-1] == 3  # no more lives lost, no more fire


def test_fire_reset_leaves_a_lost_life_to_the_reset_where_it_ends_the_training_episode():
    game = ScriptedGame(length=30, lives={t: 3 if t < 4 else 2 for t in range(40)})
    env = atari.FireReset(atari.EpisodicLife(game))
    env.reset()
    env.step(0)
    *_, terminated, _, _ = env.step(0)
    assert terminated and game.actions == [1, 2, 0, 0]
    env.reset()  # continues the game: a no-op, then FIRE and move
    assert game.actions == [1, 2, 0, 0, 0, 1, 2] and game.resets == 1


def test_resize_makes_84_by_84_uint8_and_keeps_the_picture():
    frame = np.zeros((210, 160), np.uint8)
    frame[:105] = 200  # the top half bright
    env = atari.Resize(ScriptedGame(frames={0: frame}, shape=(210, 160)))
    obs, _ = env.reset()
    assert obs.shape == (84, 84) and obs.dtype == np.uint8
    assert obs[:40].min() == 200 and obs[44:].max() == 0


def test_clip_reward_keeps_the_sign():
    env = atari.ClipReward(ScriptedGame(rewards={1: 7.0, 2: -3.0, 3: 0.0}))
    env.reset()
    assert [env.step(0)[1] for _ in range(3)] == [1.0, -1.0, 0.0]


def test_frame_stack_keeps_the_last_four_frames_on_the_channel_axis():
    env = atari.FrameStack(ScriptedGame(), stack=4)
    obs, _ = env.reset()
    assert obs.shape == (6, 4, 4) and list(obs[0, 0]) == [0, 0, 0, 0]
    for _ in range(5):
        obs, *_ = env.step(0)
    assert list(obs[0, 0]) == [2, 3, 4, 5] and env.observation_space.shape == (6, 4, 4)


@pytest.mark.parametrize("game", ["ALE/Breakout-v5", "ALE/Breakout-v5?vector=wrappers"])
def test_the_pipeline_on_ale_trains_on_lives_and_clipped_rewards_and_scores_whole_games(game):
    """Actors' envs and the evaluator's (ale-py's C++ vector env by default, the wrappers on
    request) keep one contract."""
    spec = env_spec(game)
    assert spec.observation_space.shape == (84, 84, 4) and spec.observation_space.dtype == np.uint8
    assert spec.action_space.names[:2] == ("noop", "fire") and spec.game_score and spec.architecture == "nature"
    assert spec.frame_skip == 4
    training = make_vector_env(game, 2, seed=0, training=True)
    scored = make_vector_env(game, 2, seed=0, training=False)
    for envs in (training, scored):
        assert type(envs).__name__ == ("SyncVectorEnv" if "wrappers" in game else "AleVector")
    rng = np.random.default_rng(0)
    counts = {}
    for name, envs in (("training", training), ("scored", scored)):
        episodes, games = 0, []
        for _ in range(1500):
            _, reward, terminated, truncated, info = envs.step(rng.integers(0, 4, 2))
            assert set(np.unique(reward)) <= ({-1.0, 0.0, 1.0} if name == "training" else set(range(0, 8)))
            episodes += int((terminated | truncated).sum())
            final = info.get("final_info", {})
            if "raw_score" in final:
                games += list(final["raw_score"][final["_raw_score"]])
        counts[name] = (episodes, games)
        envs.close()
    (train_episodes, train_games), (scored_episodes, scored_games) = counts["training"], counts["scored"]
    assert train_games and scored_games
    assert train_episodes >= 4 * len(train_games)  # five lives per game of Breakout, each an episode
    assert scored_episodes == len(scored_games)  # unclipped, whole games


def test_unknown_games_and_options_say_what_is_known():
    with pytest.raises(ConfigError, match=r"did you mean \['ALE/Pong-v5'.*game_ids"):
        make_env("ALE/Pongg-v5")
    with pytest.raises(ConfigError, match="unknown option 'stick'; options: \\['sticky', 'vector'\\]"):
        make_env("ALE/Pong-v5?stick=0.25")
    with pytest.raises(ConfigError, match="vector='cpp'; one of \\['ale', 'wrappers'\\]"):
        make_vector_env("ALE/Pong-v5?vector=cpp", 2, seed=0, training=True)
    with pytest.raises(ConfigError, match="probability"):
        make_env("ALE/Pong-v5?sticky=1.5")
    env = make_env("ALE/Pong-v5?sticky=0.25")
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
    env.close()


@pytest.mark.parametrize("architecture", ["nature", "impala", "cnn"])
@pytest.mark.parametrize("shape", [(84, 84, 4), (210, 160, 3), (64, 64, 3), (96, 96, 3)])
def test_image_torsos_take_any_frame_size_as_uint8(architecture, shape):
    from rlrings.core.spaces import Box, Discrete

    spec = ModelSpec(architecture, Box(shape, "uint8", (0.0,), (255.0,)), Discrete(6))
    model = build_model(spec)
    frames = torch.randint(0, 256, (3, *shape), dtype=torch.uint8)
    logits, value = model(frames)
    assert logits.shape == (3, 6) and value.shape == (3,)
    logits.sum().backward()  # the whole torso trains


def test_nature_refuses_frames_smaller_than_it_can_see():
    from rlrings.core.spaces import Box, Discrete

    with pytest.raises(ValueError, match="36x36"):
        build_model(ModelSpec("nature", Box((24, 24, 3), "uint8", (0.0,), (255.0,)), Discrete(2)))


class Batch:
    def __init__(self, i):
        self.columns = {"obs": np.full((2, 3, 84, 84, 4), i, np.uint8), "flag": np.array([[True, False]] * 2)}
        self.importance_weights = np.ones(2)
        self.keys = np.array([i, i + 1])
        self.policy_versions = np.array([i, i])


def test_device_batches_arrive_in_order_as_tensors_and_end_with_the_source():
    batches = DeviceBatches((Batch(i) for i in range(5)), torch.device("cpu"))
    seen = list(batches)
    assert [int(b.columns["obs"][0, 0, 0, 0, 0]) for b in seen] == [0, 1, 2, 3, 4]
    assert seen[0].columns["obs"].dtype == torch.uint8 and seen[0].columns["flag"].dtype == torch.bool
    assert seen[0].weights.dtype == torch.float32 and list(seen[3].keys) == [3, 4]
    batches.close()


def test_device_batches_raise_the_samplers_error_on_the_training_thread():
    def failing():
        yield Batch(0)
        raise ConnectionError("replay went away")

    batches = iter(DeviceBatches(failing(), torch.device("cpu")))
    next(batches)
    with pytest.raises(ConnectionError, match="replay went away"):
        next(batches)


def test_closing_device_batches_stops_a_thread_blocked_on_a_full_queue():
    def endless():
        i = 0
        while True:
            yield Batch(i)
            i += 1

    batches = DeviceBatches(endless(), torch.device("cpu"), depth=1)
    next(iter(batches))
    batches.close()
    assert not batches._thread.is_alive()


def test_the_viewer_plays_atari_from_arrows_and_space():
    from rlrings.services.viewer.keymaps import keymap_for

    keymap = keymap_for(env_spec("ALE/Breakout-v5"))  # noop, fire, right, left
    assert keymap.keys == {"n": 0, " ": 1, "ArrowRight": 2, "ArrowLeft": 3} and keymap.idle == 0
    assert keymap_for(env_spec("ALE/Pong-v5")).keys["d"] == 4  # rightfire

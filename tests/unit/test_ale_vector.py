"""Atari through ale-py's C++ vector env (rlrings.envs.ale_vector; actors' and the evaluator's)
against the contract the wrappers of rlrings.envs.atari keep: the same frames, raw scores of whole
games, lost lives as training episodes, serving after a lost life in scored games, final
observations on time limits, and seeds that replay."""

import gymnasium as gym
import numpy as np
import pytest

from rlrings.envs import atari, env_spec, make_vector_env
from rlrings.envs.ale_vector import AleVector, make_vector


def test_the_wrappers_resize_as_ale_py_does_so_actors_and_the_evaluator_see_one_picture():
    """Pong without sticky actions or no-ops is deterministic: the wrappers' max of the last two
    of four raw frames, resized, is the C++ env's newest stacked frame to within one grey level."""
    import ale_py
    from ale_py.vector_env import AtariVectorEnv

    gym.register_envs(ale_py)
    vector = AtariVectorEnv("pong", 1, num_threads=1, noop_max=0, use_fire_reset=False, reward_clipping=False)
    raw = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0, obs_type="grayscale")
    vector.reset(seed=0)
    raw.reset(seed=0)
    resize = atari.Resize(raw)
    rng = np.random.default_rng(0)
    worst, differing = 0, 0
    for _ in range(80):
        action = int(rng.integers(0, 6))
        stacked, *_ = vector.step(np.array([action], np.int32))
        frames = [raw.step(action)[0] for _ in range(atari.FRAME_SKIP)]
        ours = resize.observation(np.maximum(frames[-2], frames[-1])).astype(int)
        difference = np.abs(ours - stacked[0, -1].astype(int))
        worst, differing = max(worst, int(difference.max())), differing + int((difference > 0).sum())
    vector.close()
    raw.close()
    assert worst <= 1 and differing < 80 * 84 * 84 * 0.01  # rounding, on under 1% of the pixels


def test_training_ends_episodes_at_lost_lives_clips_rewards_and_reports_whole_games():
    envs = AleVector("ALE/Breakout-v5", 3, training=True, threads=1)
    spec = env_spec("ALE/Breakout-v5")
    assert envs.single_observation_space.shape == spec.observation_space.shape
    assert envs.single_observation_space.dtype == spec.observation_space.dtype
    assert envs.single_action_space.n == spec.action_space.n
    obs, info = envs.reset(seed=0)
    assert obs.shape == (3, 84, 84, 4) and obs.dtype == np.uint8 and list(info["lives"]) == [5, 5, 5]
    assert all(np.array_equal(obs[..., 0], obs[..., k]) for k in range(1, 4))  # the first frame, four times
    rng = np.random.default_rng(0)
    episodes, games, lives_lost = 0, [], 0
    for _ in range(2000):
        before = obs
        obs, reward, terminated, truncated, info = envs.step(rng.integers(0, 4, 3))
        assert set(np.unique(reward)) <= {-1.0, 0.0, 1.0}
        for i in np.flatnonzero(terminated | truncated):
            episodes += 1
            final = info["final_obs"][i]  # the ended episode's own last frames, channels last
            assert np.array_equal(final[..., :3], before[i][..., 1:])
            assert all(np.array_equal(obs[i][..., 0], obs[i][..., k]) for k in range(1, 4))  # a new stack
            if info["final_info"]["_raw_score"][i]:
                games.append((info["final_info"]["raw_score"][i], info["final_info"]["game_steps"][i]))
            else:
                lives_lost += 1
                assert 0 < info["lives"][i] < 5  # the game went on
    envs.close()
    assert games and lives_lost >= 4 * len(games) and episodes == lives_lost + len(games)
    assert all(score >= 0 and steps > 0 for score, steps in games)


def test_scored_games_keep_raw_rewards_and_end_only_with_the_game():
    envs = AleVector("ALE/Breakout-v5", 2, training=False, threads=1)
    envs.reset(seed=1)
    rng = np.random.default_rng(1)
    sums, games = np.zeros(2), []
    for _ in range(1500):
        _, reward, terminated, truncated, info = envs.step(rng.integers(0, 4, 2))
        sums += reward
        for i in np.flatnonzero(terminated | truncated):
            assert info["final_info"]["_raw_score"][i], "without training every end is a game's"
            games.append(info["final_info"]["raw_score"][i])
            assert info["final_info"]["raw_score"][i] == sums[i]  # the raw score is the sum of what it paid
            sums[i] = 0.0
    envs.close()
    assert games and set(np.unique(reward)) <= set(range(0, 8))


def test_a_time_limit_is_truncated_with_the_final_observation_and_the_score():
    envs = AleVector("ALE/Pong-v5", 2, training=True, threads=1, max_frames=400)
    obs, _ = envs.reset(seed=0)
    steps, truncated = 0, np.zeros(2, bool)
    while not truncated.any() and steps < 200:
        before = obs
        obs, _, terminated, truncated, info = envs.step(np.zeros(2, np.int64))
        steps += 1
    envs.close()
    assert steps * atari.FRAME_SKIP <= 400 and truncated.all() and not terminated.any()
    assert info["final_obs"].shape == (2, 84, 84, 4)
    assert np.array_equal(info["final_obs"][0][..., :3], before[0][..., 1:])
    assert info["final_info"]["_raw_score"].all() and (info["final_info"]["game_steps"] == steps).all()


def test_a_seed_replays_and_another_seed_does_not():
    def frames(seed):
        envs = AleVector("ALE/Breakout-v5?sticky=0.25", 2, training=True, threads=2)
        obs, _ = envs.reset(seed=seed)
        out = [obs]
        for action in np.random.default_rng(0).integers(0, 4, (50, 2)):
            out.append(envs.step(action)[0])
        envs.close()
        return np.stack(out)

    first = frames(3)
    assert np.array_equal(first, frames(3)) and not np.array_equal(first, frames(4))


def test_scored_games_serve_after_a_lost_life_so_a_policy_that_never_fires_cannot_stall_them():
    """The evaluator's games: a greedy policy that only ever asks for NOOP still loses its five lives
    and ends the game, as the wrappers' FireReset makes it; in training the agent serves itself."""

    def steps_to_first_game_over(envs, limit=2000):
        envs.reset(seed=0)
        try:
            for step in range(1, limit + 1):
                _, _, terminated, truncated, info = envs.step(np.zeros(2, np.int64))
                if (terminated | truncated).any():
                    return step, info
            return None, info
        finally:
            envs.close()

    scored, info = steps_to_first_game_over(AleVector("ALE/Breakout-v5", 2, training=False, threads=1))
    assert scored is not None and info["final_info"]["_raw_score"].any()
    wrappers, _ = steps_to_first_game_over(make_vector_env("ALE/Breakout-v5?vector=wrappers", 2, seed=0))
    assert wrappers is not None and scored < 4 * wrappers  # the same few hundred steps, not a stall
    training = AleVector("ALE/Breakout-v5", 2, training=True, threads=1)
    training.reset(seed=0)
    lives_lost = np.zeros(2, np.int64)
    for _ in range(600):
        _, _, terminated, _, info = training.step(np.zeros(2, np.int64))
        lives_lost += terminated
    training.close()
    assert (lives_lost == 1).all() and (info["lives"] == 4).all()  # the reset's serve, then none


def test_atari_vectors_take_the_cpp_path_unless_the_id_asks_for_the_wrappers():
    assert make_vector("ALE/Pong-v5?vector=wrappers", 2, training=True) is None
    assert make_vector("ALE/Pong-v5?vector=wrappers", 2, training=False) is None
    for training in (True, False):
        envs = make_vector("ALE/Pong-v5", 2, training=training)
        assert isinstance(envs, AleVector) and envs.training is training
        envs.close()
    with pytest.raises(Exception, match="unknown Atari game"):
        AleVector("ALE/Pongg-v5", 2)

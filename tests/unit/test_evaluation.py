"""The evaluator's games: greedy and sampled episodes in one vector, and the solved definitions
that decide when a run ends."""

import numpy as np
import pytest
import torch

from rlrings.core import distributions
from rlrings.core.models import ModelSpec, build_model
from rlrings.envs import best_return, env_spec, make_env, solved_threshold
from rlrings.envs.tasks import family
from rlrings.mesh import Mesh, MeshConfig
from rlrings.mesh.evaluation import play_modes
from rlrings.rpc.config import load_config


class LeansLeft(torch.nn.Module):
    """A fixed CartPole policy: the mode always pushes left, samples push either way about equally."""

    def forward(self, obs):
        return torch.tensor([0.01, 0.0]).expand(len(obs), 2), None


def test_greedy_and_sampled_episodes_play_in_one_vector_each_env_its_own_mode():
    spec = ModelSpec.for_env(env_spec("CartPole-v1"), "appo")
    returns = play_modes(LeansLeft(), spec, "CartPole-v1", {"greedy": 12, "sampled": 12}, seed=5, max_envs=8)
    assert len(returns["greedy"]) == 12 and len(returns["sampled"]) == 12
    # always left topples the pole within a dozen steps; a coin flip per step balances it about twice as long
    assert max(returns["greedy"]) <= 12, returns["greedy"]
    assert np.mean(returns["sampled"]) > 1.5 * np.mean(returns["greedy"]), returns


def one_at_a_time(model, spec, env_id, seed, episodes_per_env):
    """Greedy returns played the slow way: one env after another, each seeded as the vector seeds
    its copy (seed + index), its later episodes from where its generator got to."""
    returns = []
    for index, count in enumerate(episodes_per_env):
        env = make_env(env_id)
        obs, _ = env.reset(seed=seed + index)
        for _ in range(count):
            total, done = 0.0, False
            while not done:
                with torch.inference_mode():
                    params, _ = model(torch.as_tensor(obs)[None])
                    action = spec.make_distribution(params).mode()
                obs, reward, terminated, truncated, _ = env.step(
                    distributions.to_env_action(spec.action_space, action)[0]
                )
                total, done = total + reward, terminated or truncated
            returns.append(total)
            obs, _ = env.reset()
        env.close()
    return returns


def test_the_batched_evaluator_scores_exactly_what_one_game_at_a_time_scores():
    spec = ModelSpec.for_env(env_spec("CartPole-v1"), "appo")
    torch.manual_seed(3)
    model = build_model(spec).eval()  # an untrained network: varied, deterministic greedy games
    batched = play_modes(model, spec, "CartPole-v1", {"greedy": 10}, seed=11, max_envs=4)["greedy"]
    slow = one_at_a_time(model, spec, "CartPole-v1", 11, [3, 3, 2, 2])
    assert sorted(batched) == sorted(slow) and len(set(slow)) > 1, (batched, slow)


def test_a_mode_without_episodes_plays_none_and_an_unknown_mode_is_refused():
    spec = ModelSpec.for_env(env_spec("CartPole-v1"), "appo")
    assert play_modes(LeansLeft(), spec, "CartPole-v1", {"greedy": 3, "sampled": 0}, seed=1) == {
        "greedy": pytest.approx(play_modes(LeansLeft(), spec, "CartPole-v1", {"greedy": 3}, seed=1)["greedy"]),
        "sampled": [],
    }
    with pytest.raises(ValueError, match="unknown modes \\['best'\\]"):
        play_modes(LeansLeft(), spec, "CartPole-v1", {"best": 3}, seed=1)


def test_solved_definitions_come_from_the_env_a_task_family_or_the_fields_atari_scores():
    assert solved_threshold("CartPole-v1") == 475
    assert solved_threshold("Acrobot-v1") == -100
    assert solved_threshold("LunarLander-v3") == 200
    assert solved_threshold("ALE/Pong-v5") == 18
    assert solved_threshold("ALE/Pong-v5?sticky=0.25") == 18  # the same game, stickier
    assert solved_threshold("task:cartpole/l1.5-m0.1-f10") == family("cartpole").reward_threshold
    assert solved_threshold("crafter") is None and solved_threshold("ALE/Breakout-v5") is None
    assert solved_threshold("Pendulum-v1") is None  # Gymnasium declares none


def notice(tmp_path, *flags):
    return Mesh(load_config(MeshConfig, ["--run-dir", str(tmp_path), "--no-viewer", *flags])).target_notice()


def test_rlrings_up_says_at_start_what_will_count_as_solved_and_when_nothing_can(tmp_path):
    assert "reaches 475 (the env's definition) over 100 fresh episodes, in 2 window(s)" in notice(tmp_path)
    assert "reaches 18 (the env's definition)" in notice(tmp_path, "--env", "ALE/Pong-v5")
    assert "reaches 300 (given)" in notice(tmp_path, "--target-return", "300")
    never = notice(tmp_path, "--target-return", "1e9")
    assert "never: target 1e+09 (given) is above the most an episode of CartPole-v1 can return (500)" in never
    assert "above the most an episode of ALE/Pong-v5 can return (21)" in notice(
        tmp_path, "--env", "ALE/Pong-v5", "--target-return", "22"
    )
    assert "Pendulum-v1 has no solved definition; the run ends at its budget (give --target-return" in notice(
        tmp_path, "--env", "Pendulum-v1", "--algorithm", "sac"
    )
    assert best_return("ALE/Breakout-v5") is None and best_return("crafter") is None


def test_a_niced_evaluator_thread_lowers_itself_and_the_threads_it_starts_not_the_process():
    import os
    import threading

    from rlrings.mesh.evaluation import lower_this_threads_priority

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    seen: dict = {}

    def evaluator():
        lower_this_threads_priority(7)
        seen["evaluator"] = niceness()
        child = threading.Thread(target=lambda: seen.__setitem__("started by it", niceness()))
        child.start()
        child.join()

    before = niceness()
    thread = threading.Thread(target=evaluator)
    thread.start()
    thread.join()
    assert seen == {"evaluator": before + 7, "started by it": before + 7}
    assert niceness() == before, "the process's other threads keep their priority"


def test_eval_niceness_is_a_linux_niceness_step():
    assert MeshConfig(eval_niceness=10).eval_niceness == 10
    with pytest.raises(ValueError, match="eval_niceness"):
        MeshConfig(eval_niceness=20)


def test_a_round_still_playing_when_the_run_ends_does_not_hold_the_process():
    """A Crafter round at low priority can still be making its envs when `rlrings up` ends; the
    process must exit anyway (a non-daemon round thread held it until the round was made)."""
    import subprocess
    import sys
    import textwrap
    import time

    script = textwrap.dedent("""
        import threading, time
        from rlrings.mesh import evaluation
        evaluation.play_modes = lambda *args: time.sleep(120)  # a round that takes long to make
        evaluator = evaluation.Evaluator.__new__(evaluation.Evaluator)
        evaluator.niceness = 10
        threading.Thread(target=evaluator._play_round, daemon=True).start()
        time.sleep(0.5)
        print("leaving", flush=True)
    """)
    begin = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "leaving" in done.stdout, done.stderr
    assert time.monotonic() - begin < 30

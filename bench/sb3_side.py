"""The Stable-Baselines3 side of bench.continuous; runs in .venv-sb3.

SAC at Stable-Baselines3's defaults (MlpPolicy, 256-256, learning_starts 100,
one gradient step per env step, automatic entropy tuning), or PPO at its
defaults (``--algorithm ppo``: 2048-step rollouts, 10 epochs of 64-step
minibatches) with the observations and rewards normalised as the RL Zoo does
for MuJoCo (``VecNormalize``; evaluation sees the same observation statistics,
frozen), on one env and seed. Every ``--eval-every`` env steps the current policy plays
``--eval-episodes`` fresh deterministic episodes (seeds from 10,000,000 up, as
rlrings' evaluator); a round that reaches ``--target`` is confirmed on
``--confirm-episodes`` more, and a confirmed round ends the run. Evaluation
time is left out of the wall clock (rlrings' evaluator runs beside training,
so counting SB3's would flatter rlrings); the clock starts before SB3 and
PyTorch are imported, as rlrings' starts before its processes do. Prints one
JSON object: seconds and env steps to the target (None if not reached), the
final evaluation and the curve.
"""

from __future__ import annotations

import argparse
import json
import time

START = time.monotonic()


def evaluate(act, make, episodes: int, seed: int) -> float:
    """Mean return of ``episodes`` fresh episodes of ``make()`` (seeds from ``seed`` up), each
    action ``act(observation)``."""
    import numpy as np

    env = make()
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def arguments(parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """The settings every side takes (env, seed, budget, evaluation), on ``parser``'s own."""
    parser = parser or argparse.ArgumentParser()
    parser.add_argument("--env", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-env-steps", type=int, required=True)
    parser.add_argument("--target", type=float, default=None)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--confirm-episodes", type=int, default=100)
    return parser.parse_args()


class Judge:
    """Evaluation rounds on a side's own clock, which leaves them out; prints the side's JSON."""

    def __init__(self, args: argparse.Namespace, make):
        self.args, self.make = args, make
        self.evaluating = 0.0  # seconds spent evaluating
        self.curve: list[tuple[int, float, float]] = []
        self.solved_at: tuple[float, int] | None = None

    def round(self, act, env_steps: int) -> bool:
        """One round at ``env_steps``; True when it reached the target and was confirmed."""
        started = time.monotonic()
        mean = evaluate(act, self.make, self.args.eval_episodes, 10_000_000 + env_steps)
        self.curve.append((env_steps, mean, started - START - self.evaluating))
        target = self.args.target
        confirmed = (
            target is not None
            and mean >= target
            and evaluate(act, self.make, self.args.confirm_episodes, 20_000_000 + env_steps) >= target
        )
        self.evaluating += time.monotonic() - started
        if confirmed:
            self.solved_at = (self.curve[-1][2], env_steps)
        return confirmed

    def report(self, env_steps: int) -> None:
        print(
            json.dumps(
                {
                    "seconds_to_solve": self.solved_at[0] if self.solved_at else None,
                    "env_steps_to_solve": self.solved_at[1] if self.solved_at else None,
                    "final_evaluation": self.curve[-1][1] if self.curve else None,
                    "env_steps": env_steps,
                    "seconds": time.monotonic() - START - self.evaluating,
                    "curve": self.curve,
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--algorithm", choices=("sac", "ppo"), default="sac")
    args = arguments(parser)

    import functools

    import gymnasium as gym
    import torch

    torch.manual_seed(args.seed)
    if args.algorithm == "ppo":
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import VecNormalize

        env = VecNormalize(make_vec_env(args.env, n_envs=1, seed=args.seed))
        model = PPO("MlpPolicy", env, seed=args.seed, verbose=0)
    else:
        from stable_baselines3 import SAC

        model = SAC("MlpPolicy", args.env, seed=args.seed, verbose=0)
    normalize = getattr(model.get_env(), "normalize_obs", None)  # PPO's VecNormalize, frozen while it plays

    def act(obs):
        return model.predict(normalize(obs) if normalize else obs, deterministic=True)[0]

    judge = Judge(args, functools.partial(gym.make, args.env))
    while model.num_timesteps < args.max_env_steps:
        model.learn(total_timesteps=args.eval_every, reset_num_timesteps=False)
        if judge.round(act, model.num_timesteps):
            break
    judge.report(model.num_timesteps)


if __name__ == "__main__":
    main()

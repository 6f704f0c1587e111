"""The RLlib side of the mesh and learning benchmarks; runs in .venv-rllib.

PPO on CartPole-v1 with 2 env runners (RLlib's tuned CartPole settings),
until the mean return of its last 100 training episodes
(``episode_return_mean``) reaches 475 or the time runs out; with
``--keep-running-seconds`` it trains on and records the share of training
iterations of that window whose mean stayed at the target. Prints one JSON
object: env steps/s, seconds and env steps to reach the target (None if not
reached), both counted from before the algorithm is built, as rlrings' are
counted from before its processes start, and the learning curve.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def find(result: dict, *keys: str):
    for key in keys:
        node = result
        for part in key.split("/"):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--target", type=float, default=475)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-env-steps", type=int, default=0)
    parser.add_argument("--keep-running-seconds", type=float, default=0.0)
    args = parser.parse_args()

    import ray
    from ray.rllib.algorithms.ppo import PPOConfig

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    start = time.monotonic()
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=2)
        .training(lr=0.0003, num_epochs=6, vf_loss_coeff=0.01)
        .debugging(seed=args.seed)
    )
    algo = config.build_algo() if hasattr(config, "build_algo") else config.build()
    solved_at, solved_steps, steps, ret = None, None, 0, float("nan")
    curve, after = [], []
    while time.monotonic() - start < args.max_seconds:
        result = algo.train()
        steps = find(result, "num_env_steps_sampled_lifetime", "env_runners/num_env_steps_sampled_lifetime") or steps
        ret = find(result, "env_runners/episode_return_mean", "episode_reward_mean") or ret
        now = time.monotonic() - start
        curve.append((int(steps), float(ret), now))
        if solved_at is None and ret >= args.target:
            solved_at, solved_steps = now, int(steps)
        elif solved_at is not None:
            after.append(ret >= args.target)
        if solved_at is not None and now - solved_at >= args.keep_running_seconds:
            break
        if args.max_env_steps and steps >= args.max_env_steps:
            break
    seconds = time.monotonic() - start
    algo.stop()
    ray.shutdown()
    print(
        json.dumps(
            {
                "env_steps": int(steps),
                "seconds": seconds,
                "env_steps_per_second": steps / seconds,
                "seconds_to_solve": solved_at,
                "env_steps_to_solve": solved_steps,
                "stayed_solved_fraction": sum(after) / len(after) if after else None,
                "final_mean_return": ret,
                "curve": curve,
            }
        )
    )


if __name__ == "__main__":
    main()

"""rlrings' own SAC without the mesh: the algorithm's acting and learning halves in one
loop on one env, one update per env step, as Stable-Baselines3 runs. A side of bench.continuous
(``--systems rlrings,sb3,synchronous``): where rlrings in the mesh learns less than a reference,
this says whether the algorithm or the mesh's asynchrony (policy lag, parallel envs, chunked
inserts) costs it. Uniform sampling from an in-process ring of transitions; no replay service.

Same contract as bench/sb3_side.py: every ``--eval-every`` env steps the current policy plays
``--eval-episodes`` fresh greedy episodes (seeds from 10,000,000 up); a round at ``--target`` is
confirmed on ``--confirm-episodes`` more; evaluation time is left out of the clock. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json

from bench.sb3_side import Judge, arguments


class Transitions:
    """A ring of the newest ``capacity`` transitions, sampled uniformly."""

    def __init__(self, capacity: int, rng):
        self.capacity, self.rng, self.size, self.next = capacity, rng, 0, 0
        self.columns: dict = {}

    def add(self, columns: dict) -> None:
        import numpy as np

        rows = len(next(iter(columns.values())))
        for name, values in columns.items():
            if name not in self.columns:
                self.columns[name] = np.zeros((self.capacity, *values.shape[1:]), values.dtype)
        for row in range(rows):
            for name, values in columns.items():
                self.columns[name][self.next] = values[row]
            self.next = (self.next + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, batch: int) -> dict:
        import torch

        index = self.rng.integers(0, self.size, batch)
        return {name: torch.as_tensor(values[index]).unsqueeze(1) for name, values in self.columns.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--algorithm", default='{"name": "sac"}', help="JSON: the algorithm and its settings")
    parser.add_argument("--threads", type=int, default=1, help="torch's threads")
    args = arguments(parser)

    import numpy as np
    import torch

    from rlrings import algorithms
    from rlrings.core.models import Policy, build_model
    from rlrings.envs import env_spec, make_env, make_vector_env

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    settings = json.loads(args.algorithm)
    plug = algorithms.get(settings.pop("name"))
    if plug.name != "sac":
        parser.error(
            f"--algorithm: the synchronous side runs sac (updates_per_env_step, a uniform table), not {plug.name}"
        )
    env = env_spec(args.env)
    config = plug.for_env(plug.config(**{"chunk_length": 1, **settings}), args.env)  # each transition at once
    if config.prioritized:
        parser.error("--algorithm: the synchronous side samples uniformly; prioritized is not run here")
    spec = plug.model_spec(env, None, config)
    model = build_model(spec)
    learning = plug.learning(config, spec, model)
    acting = plug.acting(config, env, spec, num_envs=1, seed=args.seed)
    policy = Policy(spec, model)
    batch = plug.default_batch_size
    memory = Transitions(config.capacity or args.max_env_steps, np.random.default_rng(args.seed))
    judge = Judge(args, functools.partial(make_env, args.env))
    envs = make_vector_env(args.env, 1, seed=args.seed, training=True)
    obs, _ = envs.reset(seed=args.seed)
    owed, steps, weights = 0.0, 0, torch.ones(batch)
    while steps < args.max_env_steps:
        actions = acting.act(model, obs, learning.updates)
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        for chunk in acting.observe(obs, actions, next_obs, rewards, terminated, truncated, info):
            memory.add(chunk.columns)
        obs, steps = next_obs, steps + 1
        if memory.size >= max(config.learning_starts, batch):
            owed += config.updates_per_env_step
            while owed >= 1:
                learning.update(memory.sample(batch), weights)
                owed -= 1
        if steps % args.eval_every == 0 and judge.round(functools.partial(policy.act, greedy=True), steps):
            break
    judge.report(steps)


if __name__ == "__main__":
    main()

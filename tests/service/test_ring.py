"""The learner ring with real ranks: separate processes joined over loopback.

For both backends: after K updates every rank holds bit-identical weights,
and a ring update on batches A and B equals one single-process update on A
and B together. A rank that loses its peer gets a clear RingBrokenError.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rlrings import algorithms
from rlrings.core.errors import ConfigError
from rlrings.core.models import ModelSpec, build_model
from rlrings.core.ring import RingPlace, local_ring_environment
from rlrings.envs import env_spec
from rlrings.ops.processes import finish_process, free_port
from tests.helpers import ring_backends

pytestmark = pytest.mark.service

UPDATES = 4
RANKS = 2


# -- what each rank runs ----------------------------------------------------------


SETTINGS = {"dqn": {"target_update_every": 2}, "ppo": {"epochs": 2, "minibatches": 2}}


def make_learner(algorithm: str, seed: int, ring=None):
    """The algorithm's learning half, from the registry, on CartPole's model."""
    torch.manual_seed(seed)
    plug = algorithms.get(algorithm)
    spec = ModelSpec.for_env(env_spec("CartPole-v1"), algorithm, None)
    learning = plug.learning(plug.config(**SETTINGS.get(algorithm, {})), spec, build_model(spec))
    if ring is not None:
        learning.join(ring)
    return learning


def make_batch(algorithm: str, generator: torch.Generator, size: int = 8, steps: int = 5) -> dict:
    if algorithm != "dqn":
        return {
            "obs": torch.randn(size, steps + 1, 4, generator=generator),
            "action": torch.randint(0, 2, (size, steps + 1), generator=generator),
            "reward": torch.randn(size, steps + 1, generator=generator),
            "terminated": torch.rand(size, steps + 1, generator=generator) < 0.1,
            "truncated": torch.zeros(size, steps + 1, dtype=torch.bool),
            "logp": -torch.rand(size, steps + 1, generator=generator),
        }
    return {
        "obs": torch.randn(size, 1, 4, generator=generator),
        "action": torch.randint(0, 2, (size, 1), generator=generator),
        "reward": torch.randn(size, 1, generator=generator),
        "next_obs": torch.randn(size, 1, 4, generator=generator),
        "discount": torch.full((size, 1), 0.97),
        "weights": torch.rand(size, generator=generator) + 0.5,
    }


def batches(algorithm: str) -> list[list[dict]]:
    """batches[k][r]: the batch rank r learns from in update k."""
    generator = torch.Generator().manual_seed(7)
    return [[make_batch(algorithm, generator) for _ in range(RANKS)] for _ in range(UPDATES)]


def update(learner, algorithm: str, batch: dict) -> dict:
    columns = {k: v for k, v in batch.items() if k != "weights"}
    weights = batch.get("weights", torch.ones(len(batch["obs"])))
    return {name: float(value) for name, value in learner.update(columns, weights).stats.items()}


def rank_main(backend: str, algorithm: str, out: str) -> None:
    """One rank: joins the ring, starts from its own (different) weights,
    takes rank 0's, updates UPDATES times on its own batches, saves the result."""
    from rlrings.core.ring import connect

    torch.set_num_threads(1)
    ring = connect(backend, timeout_seconds=60)
    learner = make_learner(algorithm, seed=100 + ring.rank, ring=ring)
    step = ring.broadcast_state(learner, 5 if ring.rank == 0 else 0)
    losses = []
    for k, per_rank in enumerate(batches(algorithm)):
        stats = update(learner, algorithm, per_rank[ring.rank])
        stop, mean = ring.agree(ring.rank == 1 and k == UPDATES - 1, stats)
        losses.append((stop, mean["loss"]))
    state = {name: tensor.clone() for name, tensor in learner.model.state_dict().items()}
    grads = {name: p.grad.clone() for name, p in learner.model.named_parameters() if p.grad is not None}
    result = {"rank": ring.rank, "size": ring.size, "step": step, "state": state, "grads": grads, "losses": losses}
    torch.save(result, out)
    ring.close()
    finish_process(0)


def start_ranks(code: str, tmp_path) -> list[subprocess.Popen]:
    port = free_port()
    processes = []
    for rank in range(RANKS):
        env = {**os.environ, **local_ring_environment(rank, RANKS, port), "OMP_NUM_THREADS": "1"}
        with open(tmp_path / f"rank{rank}.log", "w") as log:  # the child keeps its own descriptor
            processes.append(
                subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT)
            )
    return processes


def wait_all(processes, tmp_path, timeout=120) -> list[int]:
    codes = []
    for rank, process in enumerate(processes):
        try:
            codes.append(process.wait(timeout))
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise AssertionError(f"rank {rank} hung:\n{(tmp_path / f'rank{rank}.log').read_text()[-3000:]}") from None
    return codes


# -- the tests ----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["impala", "dqn", "ppo"])
@pytest.mark.parametrize("backend", ring_backends())
def test_ring_update_equals_one_update_on_the_joined_batch(backend, algorithm, tmp_path):
    """For PPO (minibatches of each rank's own steps, advantages standardised per minibatch) a
    ring update is not one update on the joined batch; its ranks must still stay identical."""
    out = f"{str(tmp_path / 'result')!r} + __import__('os').environ['RANK']"
    code = f"from tests.service.test_ring import rank_main; rank_main({backend!r}, {algorithm!r}, {out})"
    processes = start_ranks(code, tmp_path)
    codes = wait_all(processes, tmp_path)
    logs = "\n".join((tmp_path / f"rank{r}.log").read_text()[-2000:] for r in range(RANKS))
    assert codes == [0] * RANKS, logs
    results = [torch.load(tmp_path / f"result{r}", weights_only=False) for r in range(RANKS)]
    assert [r["rank"] for r in results] == [0, 1] and {r["size"] for r in results} == {RANKS}
    assert {r["step"] for r in results} == {5}  # rank 0's step reached rank 1

    # Every rank holds the same weights, bit for bit.
    for name, tensor in results[0]["state"].items():
        assert torch.equal(tensor, results[1]["state"][name]), name

    # The ranks agreed on one mean loss per update, and on stopping after the last one (rank 1 asked).
    assert results[0]["losses"] == results[1]["losses"]
    assert [stop for stop, _ in results[0]["losses"]] == [False] * (UPDATES - 1) + [True]
    if algorithm == "ppo":
        return

    # One process, rank 0's initial weights, the two ranks' batches joined.
    single = make_learner(algorithm, seed=100)
    for per_rank in batches(algorithm):
        joined = {name: torch.cat([b[name] for b in per_rank]) for name in per_rank[0]}
        update(single, algorithm, joined)
    for name, tensor in single.model.state_dict().items():
        np.testing.assert_allclose(results[0]["state"][name].numpy(), tensor.numpy(), rtol=1e-4, atol=1e-6)
    # The gradient the last step applied is the mean over the ring (Adam alone would hide a sum).
    grads = {name: p.grad for name, p in single.model.named_parameters() if p.grad is not None}
    for name, grad in results[0]["grads"].items():  # Horovod fills unused parameters' gradients with zeros
        if name not in grads:
            assert not grad.any(), name
    for name, grad in grads.items():
        np.testing.assert_allclose(results[0]["grads"][name].numpy(), grad.numpy(), rtol=1e-3, atol=1e-6)
    initial = make_learner(algorithm, seed=100).model.state_dict()
    assert any(not torch.equal(tensor, initial[name]) for name, tensor in single.model.state_dict().items())


@pytest.mark.parametrize("backend", ring_backends())
def test_a_rank_whose_peer_dies_stops_with_a_clear_error(backend, tmp_path):
    # Rank 1 dies only once rank 0 has left the barrier (a file says so): leaving a barrier is not
    # simultaneous, and a peer gone while rank 0 still finished it failed the barrier instead
    passed = tmp_path / "rank0-passed-the-barrier"
    code = (
        "import os, pathlib, time, torch\n"
        "from rlrings.ops.processes import finish_process\nfrom rlrings.core.ring import connect\n"
        f"ring = connect({backend!r}, timeout_seconds=30)\n"
        f"passed = pathlib.Path({str(passed)!r})\n"
        "ring.barrier()\n"
        "if ring.rank == 1:\n"
        "    while not passed.exists(): time.sleep(0.01)\n"
        "    os._exit(9)\n"
        "passed.touch()\n"
        "time.sleep(1)\n"
        "try:\n"
        "    ring.allreduce_mean(torch.ones(3, dtype=torch.float64))\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
        "    ring.close(); raise SystemExit(finish_process(3))\n"
    )
    processes = start_ranks(code, tmp_path)
    codes = wait_all(processes, tmp_path, timeout=60)
    assert codes == [3, 9]
    output = (tmp_path / "rank0.log").read_text()
    assert "RingBrokenError ring: allreduce failed, a peer has left or timed out" in output


@pytest.mark.parametrize("backend", ring_backends())
def test_a_rank_that_starts_before_rank_0_waits_for_it(backend, tmp_path):
    """Ranks start in any order and at any pace: rank 1 up 4 s before rank 0 (a busy machine
    imports at its own pace) joins once rank 0 serves the rendezvous. Horovod's own client gave
    up within a second and aborted both ranks (the 'peer dies' test failed now and then so)."""
    code = (
        "from rlrings.ops.processes import finish_process\nfrom rlrings.core.ring import connect\n"
        f"ring = connect({backend!r}, timeout_seconds=60)\n"
        "ring.barrier()\nprint('joined', ring.rank, ring.size, flush=True)\n"
        "ring.close(); raise SystemExit(finish_process(0))\n"
    )
    port = free_port()
    processes = []
    for rank in (1, 0):
        env = {**os.environ, **local_ring_environment(rank, RANKS, port), "OMP_NUM_THREADS": "1"}
        with open(tmp_path / f"rank{rank}.log", "w") as log:
            processes.append(
                subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT)
            )
        if rank == 1:
            time.sleep(4)
    codes = wait_all(processes[::-1], tmp_path, timeout=90)
    assert codes == [0, 0], [(tmp_path / f"rank{r}.log").read_text()[-2000:] for r in (0, 1)]
    assert "joined 1 2" in (tmp_path / "rank1.log").read_text()


def test_ring_place_comes_from_the_environment_with_clear_errors():
    place = RingPlace.from_environ({"RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "learner-0", "MASTER_PORT": "29500"})
    assert (place.rank, place.size, place.local_rank, place.local_size) == (1, 4, 0, 1)
    assert (place.master_addr, place.master_port) == ("learner-0", 29500)
    for environ, named in [
        ({"WORLD_SIZE": "2"}, "RANK is not set"),
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK='x' is not a whole number"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is outside"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "70000"}, "MASTER_PORT=70000"),
        ({"RANK": "0", "WORLD_SIZE": "3", "LOCAL_WORLD_SIZE": "2"}, "LOCAL_WORLD_SIZE=2"),
    ]:
        with pytest.raises(ConfigError, match=named):
            RingPlace.from_environ(environ)


LAUNCHED = """
import torch
from rlrings.ops.processes import finish_process
from rlrings.core.ring import connect
ring = connect({backend!r}, timeout_seconds=60)
mean = ring.allreduce_mean(torch.tensor([float(ring.rank)], dtype=torch.float64)).item()
print(f"rank {{ring.rank}} of {{ring.size}}: mean {{mean}}", flush=True)
ring.close()
finish_process(0)
"""


@pytest.mark.parametrize("backend", ring_backends())
def test_the_usual_launchers_start_the_same_ring(backend, tmp_path):
    """horovodrun (its driver serves the rendezvous) and torchrun (it sets RANK and the rest)."""
    script = tmp_path / "rank.py"
    script.write_text(LAUNCHED.format(backend=backend))
    bin_dir = os.path.dirname(sys.executable)
    if backend == "horovod":
        command = [os.path.join(bin_dir, "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
                   "--network-interface", "lo", sys.executable, str(script)]  # fmt: skip
    else:
        command = [os.path.join(bin_dir, "torchrun"), "--nproc-per-node", "2", "--master-port", str(free_port()),
                   str(script)]  # fmt: skip
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "rank 0 of 2: mean 0.5" in result.stdout and "rank 1 of 2: mean 0.5" in result.stdout

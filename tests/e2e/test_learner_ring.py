"""``rlrings up --learners 2 --ring ...``: a data-parallel learner ring inside the whole mesh.

The ring still solves CartPole-v1, and a rank killed with SIGKILL brings the
ring down cleanly and back up from rank 0's last checkpoint while the actors
go on acting.
"""

import json
import signal
import time

import grpc
import pytest
import torch

from rlrings.core.errors import ConfigError
from rlrings.v1 import actor_pb2, actor_pb2_grpc, learner_pb2, learner_pb2_grpc
from tests.e2e.helpers import children_named, finish, up
from tests.helpers import ring_backends as backends

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def status(run_dir, name, stub_cls, request):
    port = json.loads((run_dir / "configs" / f"{name}.yaml").read_text())["port"]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return stub_cls(channel).GetStatus(request, timeout=3)


def learner_status(run_dir, rank=0):
    return status(
        run_dir, f"learner-{rank}", learner_pb2_grpc.LearnerServiceStub, learner_pb2.GetLearnerStatusRequest()
    )


def env_steps(run_dir):
    total = 0
    for name in ("actor-0", "actor-1"):
        total += status(run_dir, name, actor_pb2_grpc.ActorServiceStub, actor_pb2.GetActorStatusRequest()).env_steps
    return total


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (grpc.RpcError, FileNotFoundError):
            pass  # starting or restarting
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_horovod_ring_without_horovod_is_refused_with_the_way_out(tmp_path, monkeypatch):
    import rlrings.mesh
    import rlrings.mesh.supervisor

    monkeypatch.setattr(rlrings.mesh.supervisor, "horovod_available", lambda: False)
    with pytest.raises(ConfigError, match="make horovod.*--ring torch"):
        rlrings.mesh.Mesh(rlrings.mesh.MeshConfig(learners=2, ring="horovod", run_dir=tmp_path))
    assert not (tmp_path / "logs").exists(), "nothing was started"


@pytest.mark.parametrize("backend", backends())
def test_two_learner_ranks_solve_cartpole(backend, tmp_path):
    """The ring learns. With APPO: IMPALA at its defaults on two ranks oscillates on CartPole now and
    then (a CI run's evaluations climbed to 464, fell to 204 and ended the 1 M-step budget at 474,
    one run in several here), which is IMPALA's stability, not the ring's; APPO solved in about
    15 s (92 k env steps) in each run here."""
    process = up(tmp_path, "--learners", "2", "--ring", backend, "--algorithm", "appo", "--max-seconds", "240",
                 "--no-viewer")  # fmt: skip
    summary, output = finish(process, tmp_path)
    assert summary["solved"], summary
    assert summary["learners"] == 2 and summary["ring"] == backend
    assert not summary["restarts"], summary["restarts"]
    for rank in (0, 1):
        log = (tmp_path / "logs" / f"learner-{rank}.log").read_text()
        assert f"rank {rank} of 2 ({backend})" in log
        assert "Traceback" not in log
    assert "2 learner ranks" in output


@pytest.mark.parametrize("backend", backends())
def test_a_killed_rank_restarts_the_ring_from_its_last_checkpoint(backend, tmp_path):
    process = up(
        tmp_path, "--learners", "2", "--ring", backend, "--checkpoint-every", "40", "--target-return", "1e9",
        "--max-seconds", "300", "--no-viewer",
    )  # fmt: skip
    try:
        wait_until(lambda: learner_status(tmp_path).learner_step >= 100, 90, "100 ring updates")
        first = learner_status(tmp_path, 1)
        assert (first.rank, first.world_size) == (1, 2)
        (rank0,) = children_named(process.pid, "learner-0.yaml")
        (rank1,) = children_named(process.pid, "learner-1.yaml")
        steps_before = env_steps(tmp_path)
        rank1.kill()  # kill -9

        # Rank 0 leaves cleanly within seconds instead of hanging in an allreduce: it fails its next
        # allreduce saying why, or the supervisor, which saw rank 1 die, has stopped it first.
        rank0.wait(timeout=60)
        log0 = (tmp_path / "logs" / "learner-0.log").read_text()
        assert "a peer has left or timed out" in log0 or "learner stopping" in log0, log0[-3000:]
        assert "Traceback" not in log0, log0[-3000:]
        # The actors act on meanwhile.
        wait_until(lambda: env_steps(tmp_path) > steps_before + 5000, 60, "actors to keep acting")

        # The ring comes back (new processes) and resumes from the checkpoint, not from scratch.
        wait_until(lambda: len(children_named(process.pid, "learner-1.yaml")) == 1, 60, "rank 1 to restart")
        restarted = wait_until(lambda: learner_status(tmp_path), 90, "the restarted ring")
        log0 = (tmp_path / "logs" / "learner-0.log").read_text()
        resumed = [line for line in log0.splitlines() if "resumed from" in line]
        assert resumed, log0[-3000:]
        resumed_at = int(resumed[-1].rsplit("at update ", 1)[1])
        assert resumed_at >= 80, resumed[-1]  # at least the last periodic checkpoint before the kill
        assert restarted.learner_step >= resumed_at
        wait_until(lambda: learner_status(tmp_path).learner_step >= resumed_at + 40, 90, "training to go on")
        for rank in (0, 1):
            assert (
                f"rank {rank} of 2 ({backend}) starts at update {resumed_at}"
                in (tmp_path / "logs" / f"learner-{rank}.log").read_text()
            )
    finally:
        process.send_signal(signal.SIGINT)  # done: stop the mesh in order, as Ctrl-C does
        output = process.communicate(timeout=180)[0]
    assert process.returncode == 130, output[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    restarts = " ".join(summary["restarts"])
    assert "learner-1 exited with -9" in restarts and "restarting the learner ring" in restarts
    assert "actor" not in restarts and "replay" not in restarts and "parameter" not in restarts
    saved = torch.load(tmp_path / "checkpoints" / "learner.pt", weights_only=False)  # whole, loadable
    assert saved["step"] >= resumed_at + 40, (tmp_path / "logs" / "learner-0.log").read_text()[-3000:]
    assert not list((tmp_path / "checkpoints").glob("*.tmp*")), "no half-written checkpoint left"
    for name in ("actor-0", "actor-1", "replay"):
        assert "Traceback" not in (tmp_path / "logs" / f"{name}.log").read_text()

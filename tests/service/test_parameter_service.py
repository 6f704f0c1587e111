"""The parameter service over real gRPC on loopback."""

import hashlib
import subprocess
import sys
import threading
import time

import grpc
import pytest

from rlrings.clients.parameter import ParameterClient, WeightsFollower
from rlrings.core.errors import InvalidArgumentError, NotFoundError, ResourceExhaustedError
from rlrings.v1 import parameter_pb2, parameter_pb2_grpc, spaces_pb2

pytestmark = pytest.mark.service
MODEL = spaces_pb2.ModelSpec(architecture="mlp", env_id="CartPole-v1")


def test_publish_and_fetch_beyond_the_message_limit(start_parameter):
    server = start_parameter(piece_bytes=1 << 20)
    data = bytes(range(256)) * (40 * 1024)  # 10 MiB: more than one 4 MiB message
    with ParameterClient(server.address) as client:
        assert client.publish(data, MODEL, learner_step=7) == 1
        header, fetched = client.fetch(tag="latest")
    assert fetched == data and header.version == 1 and header.learner_step == 7
    assert header.model.architecture == "mlp" and list(header.tags) == ["latest"]


def test_named_tags_move_to_the_newest_version_given_them_and_outlive_retention(start_parameter):
    server = start_parameter(keep_versions=1)
    with ParameterClient(server.address) as client:
        assert client.publish(b"reptile s0", MODEL, tags=["fewshot/reptile/s0", "shared"]) == 1
        assert client.publish(b"pretrain s0", MODEL, tags=["fewshot/pretrain/s0", "shared"]) == 2
        for i in range(3):
            client.publish(f"learner {i}".encode(), MODEL)
        header, data = client.fetch(tag="fewshot/reptile/s0")
        assert (header.version, data, list(header.tags)) == (1, b"reptile s0", ["fewshot/reptile/s0"])
        assert client.fetch(tag="shared")[1] == b"pretrain s0"
        assert dict(client.list().tags) == {"fewshot/reptile/s0": 1, "fewshot/pretrain/s0": 2, "shared": 2,
                                            "latest": 5}  # fmt: skip
        for bad, why in (("latest", "set by the service"), ("a b", "not a tag name"), ("/x", "not a tag name")):
            with pytest.raises(InvalidArgumentError, match=f"header.tags: .*{why}"):
                client.publish(b"x", MODEL, tags=[bad])
        assert client.list().tags["latest"] == 5  # nothing stored by the refused publishes
    server.stop()
    again = start_parameter(keep_versions=1)
    with ParameterClient(again.address) as client:
        assert client.fetch(tag="fewshot/pretrain/s0")[1] == b"pretrain s0"
        assert [h.version for h in client.list().versions] == [5, 2, 1]


def test_watch_pushes_every_new_version(start_parameter):
    server = start_parameter()
    with ParameterClient(server.address) as client:
        client.publish(b"v1", MODEL)
        call = client.watch(send_current=True)
        seen = []
        reader = threading.Thread(target=lambda: seen.extend(n.version for _, n in zip(range(3), call)))
        reader.start()
        client.publish(b"v2", MODEL)
        client.publish(b"v3", MODEL)
        reader.join(10)
        call.cancel()
    assert seen == [1, 2, 3]


def test_retention_keeps_the_newest_and_the_best_across_a_restart(start_parameter, tmp_path):
    server = start_parameter(keep_versions=2)
    with ParameterClient(server.address) as client:
        for i in range(1, 4):
            client.publish(f"weights {i}".encode(), MODEL)
        assert client.report_evaluation(2, 480.0) == 2
        client.report_evaluation(3, 100.0)
        for i in range(4, 6):
            client.publish(f"weights {i}".encode(), MODEL)
        listing = client.list()
    assert [h.version for h in listing.versions] == [5, 4, 2]
    assert dict(listing.tags) == {"latest": 5, "best": 2}
    server.stop()
    again = start_parameter(keep_versions=2)
    with ParameterClient(again.address) as client:
        header, data = client.fetch(tag="best")
        assert (header.version, data, header.evaluation_return) == (2, b"weights 2", 480.0)
        with pytest.raises(NotFoundError, match="version: 1 is not retained"):
            client.fetch(version=1)
        assert client.publish(b"weights 6", MODEL) == 6


def test_a_held_version_outlives_retention_until_its_evaluation_is_reported(start_parameter):
    """The race that lost CartPole's solving version: it was pruned while the evaluator played it."""
    server = start_parameter(keep_versions=1, max_holds=2)
    with ParameterClient(server.address) as client:
        client.publish(b"weights 1", MODEL)
        header, _ = client.fetch(tag="latest", hold_seconds=600)  # the evaluator starts playing 1
        for i in range(2, 6):
            client.publish(f"weights {i}".encode(), MODEL)
        assert [h.version for h in client.list().versions] == [5, 1], "held: kept beyond keep_versions"
        client.report_evaluation(header.version, 480.0, 100, confirmed=True, solved=True)
        client.publish(b"weights 6", MODEL)
        assert dict(client.list().tags) == {"latest": 6, "best": 1, "solved": 1}
        client.fetch(version=6, hold_seconds=600)
        client.fetch(version=6, hold_seconds=600)  # holding the same version again replaces its hold
        client.publish(b"weights 7", MODEL)
        client.fetch(version=7, hold_seconds=600)
        client.publish(b"weights 8", MODEL)
        with pytest.raises(ResourceExhaustedError, match="hold_seconds: 2 versions are held already"):
            client.fetch(version=8, hold_seconds=600)
        for bad in (-1.0, 3601.0, float("nan")):
            with pytest.raises(InvalidArgumentError, match="hold_seconds"):
                client.fetch(version=8, hold_seconds=bad)
        with pytest.raises(InvalidArgumentError, match="solved: only a confirmed evaluation"):
            client.report_evaluation(8, 500.0, 10, solved=True)


def test_best_ranks_confirmed_evaluations_above_short_rounds_and_solved_stays(start_parameter):
    server = start_parameter(keep_versions=1)
    with ParameterClient(server.address) as client:
        for i in range(1, 5):
            client.publish(f"weights {i}".encode(), MODEL)
            client.fetch(version=i, hold_seconds=600)
        client.report_evaluation(1, 300.0, 10)
        assert client.report_evaluation(2, 486.8, 100, confirmed=True, solved=True) == 2
        assert client.report_evaluation(3, 500.0, 10) == 2, "a 10-episode round does not beat a confirmation"
        assert client.report_evaluation(4, 490.0, 100, confirmed=True, solved=True) == 4
        for i in range(5, 8):
            client.publish(f"weights {i}".encode(), MODEL)
        listing = client.list()
        assert dict(listing.tags) == {"latest": 7, "best": 4, "solved": 2}, "solved: the first that solved"
        assert [h.version for h in listing.versions] == [7, 4, 2]
        header = client.fetch(tag="solved", header_only=True)[0]
        assert (header.evaluation_return, header.evaluation_episodes, header.evaluation_confirmed, header.solved) == (
            486.8, 100, True, True)  # fmt: skip
        client.report_evaluation(4, 100.0, 10)  # a later short round keeps the confirmed figure
        assert client.fetch(tag="best", header_only=True)[0].evaluation_return == 490.0
        with pytest.raises(InvalidArgumentError, match="'solved' is set by the service"):
            client.delete_tag("solved")
    server.stop()
    again = start_parameter(keep_versions=1)
    with ParameterClient(again.address) as client:
        assert dict(client.list().tags) == {"latest": 7, "best": 4, "solved": 2}


def test_follower_gets_new_versions_in_the_background(start_parameter):
    server = start_parameter()
    with ParameterClient(server.address) as client:
        follower = WeightsFollower(client)
        client.publish(b"first", MODEL)
        assert follower.wait_first(10)[1] == b"first"
        client.publish(b"second", MODEL)
        for _ in range(100):
            if follower.latest()[0].version == 2:
                break
            threading.Event().wait(0.05)
        assert follower.latest()[1] == b"second"
        follower.close()


def test_bad_publishes_are_refused(start_parameter):
    server = start_parameter(max_model_bytes=1000)
    with grpc.insecure_channel(server.address) as channel:
        stub = parameter_pb2_grpc.ParameterServiceStub(channel)

        def publish(*messages):
            try:
                return stub.Publish(iter(messages), timeout=10)
            except grpc.RpcError as error:
                return error

        header = parameter_pb2.WeightsHeader(model=MODEL, total_bytes=3, sha256=hashlib.sha256(b"abc").digest())
        error = publish(parameter_pb2.PublishRequest(data=b"abc"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "first Publish message" in error.details()
        error = publish(parameter_pb2.PublishRequest(header=header), parameter_pb2.PublishRequest(data=b"abd"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "header.sha256" in error.details()
        error = publish(parameter_pb2.PublishRequest(header=header), parameter_pb2.PublishRequest(data=b"ab"))
        assert "2 bytes received, header.total_bytes says 3" in error.details()
        error = publish(parameter_pb2.PublishRequest(header=parameter_pb2.WeightsHeader(total_bytes=3)))
        assert "header.model.architecture" in error.details()
        hexed = parameter_pb2.WeightsHeader(
            model=MODEL, total_bytes=3, sha256=hashlib.sha256(b"abc").hexdigest().encode()
        )
        error = publish(parameter_pb2.PublishRequest(header=hexed), parameter_pb2.PublishRequest(data=b"abc"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "header.sha256: 64 bytes (it looks like the hex of one); send the raw 32-byte digest" in error.details()
    with ParameterClient(server.address) as client:
        with pytest.raises(ResourceExhaustedError, match="total_bytes: 2000 is above the limit of 1000"):
            client.publish(b"x" * 2000, MODEL)
        with pytest.raises(NotFoundError, match="no version published yet"):
            client.fetch(tag="latest")
        with pytest.raises(NotFoundError, match="'best' points at no version"):
            client.publish(b"ok", MODEL) and client.fetch(tag="best")
        with pytest.raises(InvalidArgumentError):
            client.publish(b"", spaces_pb2.ModelSpec())


def test_named_tags_are_bounded_and_can_be_deleted(start_parameter):
    server = start_parameter(keep_versions=1, max_named_tags=2)
    with ParameterClient(server.address) as client:
        client.publish(b"a", MODEL, tags=["a", "b"])
        with pytest.raises(ResourceExhaustedError, match=r"2 named tags exist and 1 more would pass max_named_tags"):
            client.publish(b"c", MODEL, tags=["c"])
        assert client.publish(b"b again", MODEL, tags=["b"]) == 2  # moving a tag adds no name
        untag = [sys.executable, "-m", "rlrings.ops.cli", "models", "untag", "a", "--address", server.address]
        done = subprocess.run(untag, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "tag 'a' deleted; it pointed at version 1" in done.stdout, done.stderr
        assert client.publish(b"c", MODEL, tags=["c"]) == 3
        assert dict(client.list().tags) == {"b": 2, "c": 3, "latest": 3}  # version 1 went with its tag
        with pytest.raises(InvalidArgumentError, match="'latest' is set by the service"):
            client.delete_tag("latest")
        with pytest.raises(NotFoundError, match="tag: 'a' points at no version"):
            client.delete_tag("a")
        with pytest.raises(InvalidArgumentError, match="17 tags, at most 16 per publish"):
            client.publish(b"x", MODEL, tags=[f"t{i}" for i in range(17)])


def test_a_publish_streams_to_disk_and_one_cut_short_leaves_nothing(start_parameter, tmp_path):
    """Pieces reach a temporary file as they arrive; a publisher that goes away mid-stream leaves
    no file, and temporary files a crash left are removed at start."""
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "upload-crashed.tmp").write_bytes(b"half a model")
    server = start_parameter()
    directory = tmp_path / "weights"
    assert not list(directory.glob("*.tmp"))
    more = threading.Event()
    piece = b"w" * (1 << 20)

    def requests():
        yield parameter_pb2.PublishRequest(header=parameter_pb2.WeightsHeader(model=MODEL, total_bytes=8 << 20))
        for _ in range(3):
            yield parameter_pb2.PublishRequest(data=piece)
        more.wait(30)

    with grpc.insecure_channel(server.address) as channel:
        call = parameter_pb2_grpc.ParameterServiceStub(channel).Publish.future(requests(), timeout=30)
        try:
            deadline = time.monotonic() + 10
            while sum(p.stat().st_size for p in directory.glob("upload-*.tmp")) < 3 << 20:
                assert time.monotonic() < deadline, "the pieces did not reach the disk while the stream was open"
                time.sleep(0.05)
            call.cancel()
        finally:
            more.set()  # (the client's request thread is never left waiting)
        deadline = time.monotonic() + 10
        while list(directory.glob("*.tmp")):
            assert time.monotonic() < deadline, "a cancelled publish left its temporary file"
            time.sleep(0.05)
    with ParameterClient(server.address) as client:
        assert not client.list().versions


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB file system (tmpfs), so that the disk fills up."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def test_a_full_disk_is_resource_exhausted_and_leaves_nothing_behind(start_parameter, small_disk):
    server = start_parameter(directory=small_disk)
    with ParameterClient(server.address) as client:
        assert client.publish(b"small" * 100, MODEL) == 1
        with pytest.raises(ResourceExhaustedError, match="the parameter store's disk is full"):
            client.publish(b"x" * (3 << 20), MODEL)
        assert [h.version for h in client.list().versions] == [1]
        assert sorted(p.name for p in small_disk.iterdir()) == ["v0000000001.bin", "v0000000001.json"]
        assert client.publish(b"fits again", MODEL) == 2  # the refused publish freed what it had taken


def test_a_directory_that_cannot_be_written_exits_2_at_start(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    where = tmp_path / "a-file" / "weights"
    command = [
        sys.executable,
        "-m",
        "rlrings.services.parameter",
        "--port",
        "0",
        "--metrics-port",
        "0",
        "--directory",
        str(where),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"directory: {where} cannot be written (Not a directory)" in done.stderr and "Traceback" not in done.stderr


def test_models_list_and_pull_read_a_finished_runs_weights_with_no_server(start_parameter, tmp_path, capsys):
    """What the closing summary of rlrings up prints works after the run: the service is gone."""
    import io

    import torch
    import yaml

    from rlrings import algorithms
    from rlrings.core.models import Policy, build_model
    from rlrings.envs import env_spec
    from rlrings.ops.cli import main
    from rlrings.rpc import wire

    run = tmp_path / "run"
    (run / "configs").mkdir(parents=True)
    (run / "configs" / "parameter.yaml").write_text(yaml.safe_dump({"directory": str(run / "weights")}))
    spec = algorithms.get("impala").model_spec(env_spec("CartPole-v1"))
    models = []
    server = start_parameter(keep_versions=1, directory=run / "weights")
    with ParameterClient(server.address) as client:
        for version in range(1, 4):
            models.append(build_model(spec))
            weights = io.BytesIO()
            torch.save(models[-1].state_dict(), weights)
            client.publish(weights.getvalue(), wire.model_spec_to_proto(spec), learner_step=10 * version)
            if version == 2:
                client.fetch(version=2, hold_seconds=600)
        client.report_evaluation(2, 481.5, 100, confirmed=True, solved=True)
    server.stop()
    assert main(["models", "list", "--run", str(run)]) == 0
    listing = capsys.readouterr().out
    assert "best, solved" in listing and "481.5" in listing and "100 confirmed" in listing, listing
    out = tmp_path / "model.pt"
    assert main(["models", "pull", "--run", str(run), "--tag", "solved", "--out", str(out)]) == 0
    pulled = capsys.readouterr().out
    assert pulled.startswith("version 2 (mlp for CartPole-v1") and "; tags: best, solved; evaluation 481.5" in pulled
    policy = Policy.load(out)
    assert policy.version == 2 and policy.spec.env_id == "CartPole-v1"
    for mine, theirs in zip(policy.model.state_dict().values(), models[1].state_dict().values(), strict=True):
        assert torch.equal(mine, theirs), "the weights of version 2, not another's"
    assert main(["models", "pull", "--run", str(run), "--version", "3", "--out", str(out)]) == 0
    assert Policy.load(out).version == 3
    # bad input: one line naming the flag and what would do; nothing written
    refused = tmp_path / "refused.pt"
    assert main(["models", "pull", "--run", str(tmp_path), "--out", str(refused)]) == 2
    assert "--run: " in capsys.readouterr().err and not refused.exists()
    assert main(["models", "pull", "--run", str(run), "--tag", "nope", "--out", str(refused)]) == 1
    assert "tag: 'nope' points at no version; tags now: ['best', 'latest', 'solved']" in capsys.readouterr().err
    assert not refused.exists()
    assert (run / "weights").exists() and not list((run / "weights").glob("*.tmp")), "reading wrote nothing"


def test_a_burst_of_fetches_past_the_servers_streams_per_connection_all_arrive(start_parameter):
    """More fetches at once on one channel than the server takes streams on a connection: the server
    refuses the rest (RST_STREAM, UNAVAILABLE) and gRPC's retry policy for idempotent calls tries them
    again. Without it, 24 of 32 failed here (and 245 of 512 against the default 128 streams on a
    16-core node)."""
    server = start_parameter(max_streams_per_connection=4)
    data = bytes(range(256)) * (4 * 1024)  # 1 MiB
    outcomes: list[str] = []
    with ParameterClient(server.address) as client:
        client.publish(data, MODEL, learner_step=1)

        def fetch():
            try:
                outcomes.append("ok" if client.fetch(tag="latest")[1] == data else "corrupt")
            except Exception as error:  # noqa: BLE001 - counted, then asserted on
                outcomes.append(str(error))

        threads = [threading.Thread(target=fetch) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert outcomes == ["ok"] * 32, sorted(set(outcomes))

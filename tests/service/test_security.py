"""TLS, mutual TLS, tokens with scopes and per-client limits, against real servers on loopback."""

import logging
import time
import urllib.request

import grpc
import numpy as np
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rlrings.clients.parameter import ParameterClient
from rlrings.clients.replay import ReplayClient
from rlrings.core.errors import (
    ConfigError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RlringsError,
    UnauthenticatedError,
    UnavailableError,
)
from rlrings.rpc import certs, codec
from rlrings.rpc.config import load_config
from rlrings.rpc.security import COMPONENT_SCOPES, AuthConfig, ClientSecurity, TlsConfig
from rlrings.services.parameter.config import ParameterConfig
from rlrings.services.parameter.server import ParameterServer
from rlrings.v1 import replay_pb2, spaces_pb2, tensor_pb2
from tests.helpers import frames, table

pytestmark = pytest.mark.service
SECRETS = {
    "uploader": "upload-0123456789abcdef",
    "trainer": "train-0123456789abcdef",
    "publisher": "publish-0123456789abcdef",
    "small": "small-0123456789abcdef",
    "actor": "actor-0123456789abcdef",
}
MODEL = spaces_pb2.ModelSpec(architecture="mlp", env_id="CartPole-v1")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca = certs.make_ca(root / "ca")
    rogue = certs.make_ca(root / "rogue", name="somebody else's CA")
    return {
        "ca": ca,
        "service": certs.issue(ca, root / "issued", "service", ["127.0.0.1", "localhost"]),
        "actor": certs.issue(ca, root / "issued", "actor", ["127.0.0.1"]),
        "viewer": certs.issue(ca, root / "issued", "viewer", ["127.0.0.1"]),
        "rogue": certs.issue(rogue, root / "rogue", "intruder", ["127.0.0.1"]),
        "rogue_ca": rogue,
    }


@pytest.fixture
def tokens_file(tmp_path):
    path = tmp_path / "tokens.yaml"
    entries = [
        {"name": "uploader", "token": SECRETS["uploader"], "scopes": ["insert"]},
        {"name": "trainer", "token": SECRETS["trainer"], "scopes": ["sample", "read"]},
        {"name": "actor", "token": SECRETS["actor"], "scopes": ["insert", "sample"]},
        {"name": "publisher", "token": SECRETS["publisher"], "scopes": ["publish", "read"]},
        {"name": "small", "token": SECRETS["small"], "scopes": ["insert", "read"],
         "limits": {"max_message_bytes": 2_000, "insert_bytes_per_second": 4_000, "insert_burst_bytes": 8_000}},
    ]  # fmt: skip
    path.write_text(yaml.safe_dump(entries))
    return path


def tls(pki, mutual=False, cert="service", ca="ca") -> dict:
    return {"cert_file": pki[cert].cert_file, "key_file": pki[cert].key_file, "ca_file": pki[ca].cert_file,
            "mutual": mutual}  # fmt: skip


def dial(pki=None, token=None, ca="ca", cert=None) -> ClientSecurity:
    if pki is None:
        return ClientSecurity(token=token)
    settings = {"ca_file": pki[ca].cert_file}
    if cert:
        settings |= {"cert_file": pki[cert].cert_file, "key_file": pki[cert].key_file, "mutual": True}
    return ClientSecurity.of(TlsConfig(**settings), AuthConfig(token=token))


def health(address, security=None):
    channel = (security or ClientSecurity()).channel(address, [])
    with channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_tls_serves_those_who_trust_the_ca_and_health_stays_plaintext_on_its_port(start_replay, pki):
    server = start_replay([table("t")], tls=tls(pki), health_port=0)
    with ReplayClient(server.address, security=dial(pki)) as client:
        client.insert("t", frames(4))
        assert client.info()["t"].size == 4
    for stranger in (ClientSecurity(), dial(pki, ca="rogue_ca")):  # plaintext, or a CA that did not sign it
        with ReplayClient(server.address, security=stranger) as client, pytest.raises(UnavailableError):
            client.info(timeout=3)
    assert health(f"127.0.0.1:{server.server.health_port}") == health_pb2.HealthCheckResponse.SERVING
    assert health(server.address, dial(pki)) == health_pb2.HealthCheckResponse.SERVING
    health_only = ReplayClient(f"127.0.0.1:{server.server.health_port}")
    with health_only, pytest.raises(RlringsError, match="UNIMPLEMENTED"):  # the health port serves nothing else
        health_only.info(timeout=3)


def test_mutual_tls_admits_only_certificates_the_ca_signed(start_replay, pki, tokens_file):
    server = start_replay([table("t")], tls=tls(pki, mutual=True), auth={"tokens_file": tokens_file})
    # a service of the mesh: its certificate is its identity, no token needed
    with ReplayClient(server.address, security=dial(pki, cert="service")) as client:
        client.insert("t", frames(2))
        assert client.info()["t"].size == 2
    for stranger in (dial(pki), dial(pki, cert="rogue"), dial(pki, token=SECRETS["trainer"])):
        with ReplayClient(server.address, security=stranger) as client, pytest.raises(UnavailableError):
            client.info(timeout=3)


def test_certificate_identities_get_their_own_scopes_and_a_token_narrows_them(start_replay, pki, tokens_file):
    """Each component's certificate may do only what auth.certificate_scopes lists for its common
    name; one not listed may do nothing; a token sent with a certificate leaves the scopes both hold."""
    scopes = {"service": ["insert", "sample", "read", "publish", "control"], "actor": ["insert", "read"]}
    server = start_replay([table("t")], tls=tls(pki, mutual=True),
                          auth={"tokens_file": tokens_file, "certificate_scopes": scopes})  # fmt: skip
    with ReplayClient(server.address, security=dial(pki, cert="actor")) as actor:
        actor.insert("t", frames(2))
        assert actor.info()["t"].size == 2
        with pytest.raises(PermissionDeniedError, match="certificate 'actor' may insert, read; Sample needs scope"):
            next(iter(actor.sample("t", batch_size=1, num_batches=1)))
    unlisted = ReplayClient(server.address, security=dial(pki, cert="viewer"))
    with unlisted, pytest.raises(PermissionDeniedError, match="certificate 'viewer' is not in auth.certificate_scopes"):
        unlisted.info()
    narrowed = ClientSecurity.of(
        TlsConfig(ca_file=pki["ca"].cert_file, cert_file=pki["actor"].cert_file, key_file=pki["actor"].key_file,
                  mutual=True),
        AuthConfig(token=SECRETS["trainer"]),  # sample and read, with a certificate for insert and read
    )  # fmt: skip
    with ReplayClient(server.address, security=narrowed) as both:
        assert both.info()["t"].size == 2
        for refused in (lambda: both.insert("t", frames(1)), lambda: next(iter(both.sample("t", 1, num_batches=1)))):
            with pytest.raises(PermissionDeniedError, match="token 'trainer' with certificate 'actor' may read;"):
                refused()
    with ReplayClient(server.address, security=dial(pki, cert="service")) as service:
        assert len(next(iter(service.sample("t", batch_size=2, num_batches=1))).keys) == 2


def test_tokens_need_the_scope_of_each_call(start_replay, tokens_file, tmp_path):
    server = start_replay([table("t")], auth={"tokens_file": tokens_file})
    with ReplayClient(server.address) as anonymous, pytest.raises(UnauthenticatedError, match="no bearer token"):
        anonymous.info()
    forged = ReplayClient(server.address, security=dial(token="not-a-token-0000000"))
    with forged, pytest.raises(UnauthenticatedError, match="not recognised"):
        forged.insert("t", frames(2))
    with ReplayClient(server.address, security=dial(token=SECRETS["uploader"])) as uploader:
        uploader.insert("t", frames(3))  # upload-only: may insert ...
        seen = uploader.info()["t"]  # ... and read what writing needs, not the table's state
        assert [c.name for c in seen.signature] == ["obs", "action", "reward"] and seen.sequence_length
        assert {"size", "inserted_items", "sampled_items", "rate_limiter"} <= set(seen.withheld), "zeros, not told"
        assert "signature" not in seen.withheld and "name" not in seen.withheld
        with pytest.raises(PermissionDeniedError, match="needs scope 'sample'"):
            next(iter(uploader.sample("t", batch_size=1, num_batches=1)))
    with ReplayClient(server.address, security=dial(token=SECRETS["trainer"])) as trainer:
        assert trainer.info()["t"].size == 3 and not trainer.info()["t"].withheld
        assert len(next(iter(trainer.sample("t", batch_size=2, num_batches=1))).keys) == 2
        with pytest.raises(PermissionDeniedError, match="needs scope 'insert'"):
            trainer.insert("t", frames(1))
        assert trainer.info()["t"].size == 3  # the refused insert stored nothing
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics") as response:
        metrics = response.read().decode()
    assert 'rlrings_auth_rejected_total{method="/rlrings.v1.ReplayService/Info",reason="missing"} 1.0' in metrics
    assert 'reason="scope"} 1.0' in metrics and 'code="PERMISSION_DENIED"' in metrics


def test_an_upload_only_writer_cannot_outrank_the_priorities_of_the_mesh(start_replay, tokens_file):
    """One item inserted at priority 1e300 by a token that may not sample is lowered to the table's
    largest priority so far; a writer that may sample keeps the priorities it gives."""
    server = start_replay(
        [table("p", selector="prioritized", priority_exponent=1.0)], auth={"tokens_file": tokens_file}
    )
    with ReplayClient(server.address, security=dial(token=SECRETS["actor"])) as actor:
        actor.insert("p", frames(3, start=1), priorities=[1.0])
        with ReplayClient(server.address, security=dial(token=SECRETS["uploader"])) as uploader:
            uploader.insert("p", frames(1, start=0), priorities=[1e300])
        batch = next(iter(actor.sample("p", batch_size=4000, num_batches=1)))
        share = np.bincount(batch.columns["action"][:, 0], minlength=4) / 4000
        np.testing.assert_allclose(share, [0.25] * 4, atol=0.04)  # the upload came in at 1.0, like the rest
        actor.insert("p", frames(1, start=4), priorities=[96.0])  # trusted: kept as given
        batch = next(iter(actor.sample("p", batch_size=4000, num_batches=1)))
        assert np.mean(batch.columns["action"][:, 0] == 4) == pytest.approx(0.96, abs=0.02)


def test_an_upload_only_client_writes_with_the_sdk_writer_and_its_writer_ids_are_its_own(start_replay, tokens_file):
    """The SDK writer reads the table's signature with the insert scope alone; a client that
    reuses another's writer id and sequences stores its chunks (they are not taken for the other's
    duplicates), and the acks echo the id each client sent."""
    server = start_replay([table("t")], auth={"tokens_file": tokens_file})
    steps = frames(8)
    for secret in (SECRETS["uploader"], SECRETS["actor"]):
        with ReplayClient(server.address, security=dial(token=secret)) as client:
            with client.writer("t", chunk_length=4, writer_id="game-session-1") as writer:
                for i in range(8):
                    writer.append({name: column[i] for name, column in steps.items()})
            assert writer.acked_items == 8
    with ReplayClient(server.address, security=dial(token=SECRETS["trainer"])) as trainer:
        assert trainer.info()["t"].size == 16  # both clients' 8, neither dropped as a duplicate
    with ReplayClient(server.address, security=dial(token=SECRETS["uploader"])) as client:
        chunk = {name: column[:4] for name, column in steps.items()}
        request = replay_pb2.InsertRequest(chunk=tensor_pb2.Chunk(
            table="t", writer_id="game-session-1", sequence=0,
            columns={k: codec.encode(v) for k, v in chunk.items()}))  # fmt: skip
        (ack,) = client._stub.Insert(iter([request]))
        assert ack.duplicate and ack.writer_id == "game-session-1"  # its own retry is still a duplicate
        request.chunk.writer_id = "w" * 129
        with pytest.raises(grpc.RpcError) as refused:
            list(client._stub.Insert(iter([request])))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "chunk.writer_id: 129 characters, at most 128" in refused.value.details()


def test_insert_rates_charge_what_a_chunk_decompresses_to(start_replay, tokens_file):
    """'small' may insert 8,000 bytes at once: two zstd chunks of 32 zero frames are ~100 bytes
    each on the wire but 6,400 stored, so the second is refused."""
    server = start_replay([table("t", max_size=100)], auth={"tokens_file": tokens_file})
    zeros = {"obs": np.zeros((32, 8, 8, 3), np.uint8), "action": np.zeros(32, np.int32),
             "reward": np.zeros(32, np.float32)}  # fmt: skip
    zstd = codec.Compression.COMPRESSION_ZSTD
    columns = {k: codec.encode(v, zstd) for k, v in zeros.items()}
    request = replay_pb2.InsertRequest(chunk=tensor_pb2.Chunk(table="t", columns=columns))
    assert request.ByteSize() < 400
    with ReplayClient(server.address, security=dial(token=SECRETS["small"])) as client:
        list(client._stub.Insert(iter([request])))
        with pytest.raises(grpc.RpcError) as refused:
            list(client._stub.Insert(iter([request])))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "counted decompressed; this chunk is 6,400 bytes" in refused.value.details()
        assert client.info()["t"].size == 32  # the first, not the refused one


def test_a_token_holds_at_most_its_max_concurrent_calls(start_replay, tmp_path):
    """Calls beyond a token's max_concurrent_calls are RESOURCE_EXHAUSTED, other tokens are not
    affected, and an ended call gives its slot back."""
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump([
        {"name": "narrow", "token": SECRETS["trainer"], "scopes": ["sample", "read"],
         "limits": {"max_concurrent_calls": 2}},
        {"name": "other", "token": SECRETS["actor"], "scopes": ["sample", "read", "insert"]},
    ]))  # fmt: skip
    server = start_replay([table("t")], auth={"tokens_file": path})
    waiting = replay_pb2.SampleRequest(table="t", batch_size=1, credits=1, timeout_seconds=60)  # the table is empty
    with ReplayClient(server.address, security=dial(token=SECRETS["trainer"])) as narrow:
        streams = [narrow._stub.Sample(iter([waiting])) for _ in range(2)]
        deadline = time.monotonic() + 10
        while True:  # (until the server has taken both streams in)
            try:
                narrow.info()
            except ResourceExhaustedError as error:
                assert "'narrow' has 2 calls in progress, its max_concurrent_calls" in str(error)
                break
            assert time.monotonic() < deadline, "a third call was let in"
            time.sleep(0.05)
        with ReplayClient(server.address, security=dial(token=SECRETS["actor"])) as other:
            assert other.info()["t"].size == 0
        streams[0].cancel()
        deadline = time.monotonic() + 10
        while True:  # the cancelled stream's slot comes back
            try:
                assert narrow.info()["t"].size == 0
                break
            except ResourceExhaustedError:
                assert time.monotonic() < deadline, "a cancelled call kept its slot"
                time.sleep(0.05)
        streams[1].cancel()


def test_upload_only_tokens_cannot_publish_weights(tmp_path, tokens_file):
    config = load_config(ParameterConfig, [], port=0, metrics_port=0, directory=tmp_path / "w",
                         auth={"tokens_file": tokens_file})  # fmt: skip
    server = ParameterServer(config).start()
    try:
        uploader = ParameterClient(server.address, security=dial(token=SECRETS["uploader"]))
        with uploader, pytest.raises(PermissionDeniedError, match="Publish needs scope 'publish'"):
            uploader.publish(b"weights", MODEL)
        with ParameterClient(server.address, security=dial(token=SECRETS["publisher"])) as publisher:
            assert publisher.publish(b"weights", MODEL) == 1
            assert publisher.fetch()[1] == b"weights"
    finally:
        server.stop(grace=0)


def test_a_clients_limits_refuse_big_messages_and_fast_inserts_and_store_nothing_refused(start_replay, tokens_file):
    server = start_replay([table("t")], auth={"tokens_file": tokens_file})
    small = frames(1)  # 192 B of obs plus a little
    with ReplayClient(server.address, security=dial(token=SECRETS["small"])) as client:
        with pytest.raises(ResourceExhaustedError, match=r"message: 3,\d{3} bytes is above the 2,000 bytes allowed"):
            client.insert("t", frames(16))
        assert client.info()["t"].size == 0
        stored = 0
        with pytest.raises(ResourceExhaustedError, match="insert rate: 'small' is above its 4,000 bytes/s"):
            for _ in range(200):  # ~220 B each: the 8,000 B burst runs out long before 200
                client.insert("t", small)
                stored += 1
        assert 20 <= stored < 200
        assert client.info()["t"].size == stored  # exactly what was acknowledged
    with ReplayClient(server.address, security=dial(token=SECRETS["uploader"])) as other:
        other.insert("t", frames(16))  # other clients are not slowed by one client's limit


def test_secrets_stay_out_of_logs_metrics_errors_and_settings(start_replay, tokens_file, caplog):
    caplog.set_level(logging.DEBUG)
    config_token = "process-token-0123456789"
    server = start_replay([table("t")], auth={"tokens_file": tokens_file, "token": config_token})
    messages = []
    for token in (SECRETS["uploader"], SECRETS["trainer"][:-1] + "x", None):
        with ReplayClient(server.address, security=dial(token=token)) as client:
            try:
                client.checkpoint(timeout=10)
            except (PermissionDeniedError, UnauthenticatedError) as error:
                messages.append(str(error))
    assert len(messages) == 3
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics") as response:
        metrics = response.read().decode()
    shown = "\n".join([*messages, metrics, caplog.text, repr(server.config), str(server.config.model_dump())])
    for secret in (*SECRETS.values(), config_token, SECRETS["trainer"][:-1]):
        assert secret not in shown


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"name": "a", "token": "short", "scopes": ["insert"]}], "at least 16 characters"),
        ([{"name": "a", "token": "x" * 20, "scopes": ["delete"]}], r"unknown scopes \['delete'\]"),
        ([{"name": "a", "token": "x" * 20, "scopes": []}, {"name": "a", "token": "y" * 20, "scopes": []}], "repeat"),
        ({"name": "a"}, "expected a list of tokens"),
        # an emptied Secret must not open the server to anyone
        ("", "holds no tokens; an empty file does not turn authentication off"),
        ("[]", "holds no tokens"),
        ("# every token revoked\n", "holds no tokens"),
        ("null", "holds no tokens"),
        (
            [
                {"name": "a", "token": "x" * 20, "scopes": ["read"]},
                {"name": "b", "token": "x" * 20, "scopes": ["control"]},
            ],
            r"tokens \['a', 'b'\] share one secret",
        ),
    ],
    ids=[
        "short",
        "unknown-scope",
        "names-repeat",
        "not-a-list",
        "empty",
        "empty-list",
        "comments",
        "null",
        "one-secret",
    ],
)
def test_bad_token_files_are_refused_naming_the_problem_not_the_token(start_replay, tmp_path, entries, message):
    path = tmp_path / "tokens.yaml"
    path.write_text(entries if isinstance(entries, str) else yaml.safe_dump(entries))
    with pytest.raises(ConfigError, match=message) as caught:
        start_replay([table("t")], auth={"tokens_file": path})
    assert "x" * 20 not in str(caught.value)


def test_tls_settings_are_checked_before_anything_starts(pki, tmp_path):
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        load_config(ParameterConfig, [], tls={"cert_file": pki["service"].cert_file})
    with pytest.raises(ConfigError, match="mutual needs cert_file, key_file and ca_file"):
        load_config(ParameterConfig, [], tls={**tls(pki), "ca_file": None, "mutual": True})
    with pytest.raises(ConfigError, match="ca_file: .*missing.pem is not a readable file"):
        load_config(ParameterConfig, [], tls={**tls(pki), "ca_file": tmp_path / "missing.pem"})


def test_the_cli_dials_with_tls_flags_and_the_token_from_the_environment(start_replay, pki, tokens_file, monkeypatch,
                                                                         capsys):  # fmt: skip
    from rlrings.ops.cli import main

    server = start_replay([table("t")], tls=tls(pki), auth={"tokens_file": tokens_file})
    ca = ["--ca-file", str(pki["ca"].cert_file)]
    assert main(["health", server.address, *ca]) == 0
    assert main(["health", server.address, "--timeout", "2"]) == 1  # plaintext against TLS
    assert main(["info", "--address", server.address, *ca]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().out
    monkeypatch.setenv("RLRINGS_TOKEN", SECRETS["trainer"])
    assert main(["info", "--address", server.address, *ca]) == 0
    out = capsys.readouterr().out
    assert "t" in out and SECRETS["trainer"] not in out
    assert main(["info", "--address", server.address, "--cert-file", str(pki["service"].cert_file)]) == 2


def test_certs_command_makes_a_ca_and_a_certificate_servers_accept(tmp_path, start_replay):
    from rlrings.ops.cli import main

    assert main(["certs", "--out", str(tmp_path / "c"), "--hosts", "localhost,127.0.0.1", "--name", "svc"]) == 0
    files = {"cert_file": tmp_path / "c" / "svc.pem", "key_file": tmp_path / "c" / "svc-key.pem",
             "ca_file": tmp_path / "c" / "ca.pem"}  # fmt: skip
    server = start_replay([table("t")], tls=files)
    assert health(server.address, ClientSecurity.of(TlsConfig(ca_file=files["ca_file"]), AuthConfig())) == 1


def test_certs_command_keeps_an_existing_ca_and_refuses_to_replace_a_certificate(tmp_path, start_replay, capsys):
    from rlrings.ops.cli import main

    out = tmp_path / "c"
    assert main(["certs", "--out", str(out), "--name", "replay"]) == 0
    ca_before = (out / "ca.pem").read_bytes()
    assert main(["certs", "--out", str(out), "--name", "viewer"]) == 0
    assert (out / "ca.pem").read_bytes() == ca_before, "a second run replaced the CA"
    assert "existing, kept" in capsys.readouterr().out
    replay_cert = (out / "replay.pem").read_bytes()
    assert main(["certs", "--out", str(out), "--name", "replay"]) == 2
    assert "replay.pem exists; give another --name, or --force" in capsys.readouterr().err
    assert (out / "replay.pem").read_bytes() == replay_cert
    # the first certificate still works beside the second: one CA signed both
    files = {"cert_file": out / "replay.pem", "key_file": out / "replay-key.pem", "ca_file": out / "ca.pem"}
    server = start_replay([table("t")], tls=files)
    assert health(server.address, ClientSecurity.of(TlsConfig(ca_file=out / "ca.pem"), AuthConfig())) == 1
    assert main(["certs", "--out", str(out), "--name", "replay", "--force"]) == 0
    (out / "ca-key.pem").unlink()
    assert main(["certs", "--out", str(out), "--name", "other"]) == 2
    assert "holds half a CA" in capsys.readouterr().err


def test_tokens_command_writes_one_least_privilege_token_per_component(tmp_path, start_replay, capsys):
    from rlrings.ops.cli import main

    out = tmp_path / "tokens"
    assert main(["tokens", "--out", str(out), "--client", "game-uploads=insert"]) == 0
    assert "kubectl create secret generic rlrings-tokens --from-file=" in capsys.readouterr().out
    entries = yaml.safe_load((out / "tokens.yaml").read_text())
    assert {e["name"]: e["scopes"] for e in entries} == {**COMPONENT_SCOPES, "game-uploads": ["insert"]}
    assert all((out / f"{e['name']}-token").read_text() == e["token"] for e in entries)
    assert (out / "tokens.yaml").stat().st_mode & 0o077 == 0
    server = start_replay([table("t")], auth={"tokens_file": out / "tokens.yaml"})
    token = {e["name"]: e["token"] for e in entries}
    with ReplayClient(server.address, security=dial(token=token["viewer"])) as viewer:
        viewer.insert("t", frames(2))  # demonstrations
        with pytest.raises(PermissionDeniedError, match="Sample needs scope 'sample'"):
            next(iter(viewer.sample("t", batch_size=1, num_batches=1)))
    with ReplayClient(server.address, security=dial(token=token["learner"])) as learner:
        assert len(next(iter(learner.sample("t", batch_size=2, num_batches=1))).keys) == 2
    assert main(["tokens", "add", "game-servers=read,act", "replays=insert", "--out", str(out)]) == 0
    added = {e["name"]: e for e in yaml.safe_load((out / "tokens.yaml").read_text())}
    assert added["game-servers"]["scopes"] == ["read", "act"] and added["replays"]["scopes"] == ["insert"]
    assert {name: added[name]["token"] for name in token} == token, "the tokens there before are kept"
    assert (out / "game-servers-token").read_text() == added["game-servers"]["token"]
    assert main(["tokens", "add", "replays=insert", "--out", str(out)]) == 2
    assert "'replays' has a token already" in capsys.readouterr().err
    assert main(["tokens", "add", "x=insert", "--out", str(tmp_path / "none")]) == 2
    assert main(["tokens", "--out", str(out)]) == 2, "an existing tokens file is never replaced"
    assert main(["tokens", "--out", str(tmp_path / "x"), "--client", "a=delete"]) == 2
    assert "unknown scopes ['delete']" in capsys.readouterr().err
    # a client's scopes after commas stay that client's, flag after flag
    two = tmp_path / "two"
    assert main(["tokens", "--out", str(two), "--client", "a=insert,read", "--client", "b=act"]) == 0
    scopes = {e["name"]: e["scopes"] for e in yaml.safe_load((two / "tokens.yaml").read_text())}
    assert (scopes["a"], scopes["b"]) == (["insert", "read"], ["act"])

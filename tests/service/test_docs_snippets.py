"""The docs' code for game teams and operators, run as written (but for addresses) against real
services: replay's configuration file and client, the SDK upload with a token, the front page's game
team (upload, download, act), rendering a running mesh's model; and what a sampler waiting on the
rate limiter is told."""

import os
import subprocess
import sys

import pytest

from rlrings.clients.replay import ReplayClient
from rlrings.core.errors import DeadlineExceededError
from rlrings.ops.processes import free_port
from tests.helpers import run_shell_snippet, snippet


@pytest.fixture
def replay_from_the_docs(tmp_path):
    """``rlrings replay --config replay.yaml`` with the docs' file; flags move the ports and the
    snapshot directory into the test's own (flags beat the file, as the README says)."""
    config = tmp_path / "replay.yaml"
    config.write_text(snippet("replay-config"))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rlrings.ops.cli", "replay", "--config", str(config), "--port", str(port),
         "--metrics-port", "0", "--snapshot-dir", str(tmp_path / "replay")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        with ReplayClient(address) as client:
            client.wait_ready(60)
        yield address
    finally:
        process.terminate()
        process.communicate(timeout=60)


def test_the_replay_client_snippet_runs_as_written(replay_from_the_docs, tmp_path):
    code = snippet("replay-client")
    assert code.count('"localhost:8000"') == 1
    script = tmp_path / "snippet.py"
    script.write_text(code.replace('"localhost:8000"', f'"{replay_from_the_docs}"'))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with ReplayClient(replay_from_the_docs) as client:
        table = client.info(["experience"])["experience"]
    assert table.inserted_items == 7_000 and table.sampled_items == 25_600


def test_a_sample_held_back_by_the_rate_limiter_says_what_it_waits_for(replay_from_the_docs):
    with ReplayClient(replay_from_the_docs) as client, pytest.raises(DeadlineExceededError) as raised:
        next(iter(client.sample("experience", batch_size=256, num_batches=1, timeout=1)))
    message = str(raised.value)
    assert "table 'experience'" in message and "it waits for 1,000 more inserts" in message, message


def test_the_upload_with_a_token_runs_as_written(tmp_path, start_replay):
    """The SDK upload: an insert-only token over TLS, against the docs' table."""
    import yaml

    from rlrings.rpc import certs
    from rlrings.rpc.security import AuthConfig, ClientSecurity, TlsConfig

    ca = certs.make_ca(tmp_path / "certs")
    pair = certs.issue(ca, tmp_path / "certs", "replay", ["127.0.0.1", "localhost"])
    table = yaml.safe_load(snippet("replay-config"))["tables"][0]
    tokens = tmp_path / "tokens.yaml"
    entries = [{"name": "game-uploads", "token": "upload-token-0123456789", "scopes": ["insert"]},
               {"name": "ops", "token": "ops-token-0123456789abc", "scopes": ["read"]}]  # fmt: skip
    tokens.write_text(yaml.safe_dump(entries))
    server = start_replay(
        [table], tls={"cert_file": pair.cert_file, "key_file": pair.key_file}, auth={"tokens_file": tokens}
    )
    code = snippet("upload-with-token")
    assert code.count('"localhost:8000"') == 1
    script = tmp_path / "upload.py"
    script.write_text(code.replace('"localhost:8000"', f'"localhost:{server.address.rsplit(":", 1)[1]}"'))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, env={**os.environ, "RLRINGS_TOKEN": "upload-token-0123456789"})  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "columns: {'obs': ('uint8', (64, 64, 3))" in result.stdout and "uploaded" in result.stdout
    ops = ClientSecurity.of(TlsConfig(ca_file=ca.cert_file), AuthConfig(token="ops-token-0123456789abc"))
    with ReplayClient(server.address, security=ops) as client:
        assert client.info(["experience"])["experience"].inserted_items == 64


def publish_cartpole_model(address: str, security=None) -> int:
    """An untrained CartPole model, published and evaluated, so that the service tags it best."""
    from rlrings.clients.parameter import ParameterClient
    from rlrings.core.models import ModelSpec, build_model, weights_to_bytes
    from rlrings.envs import env_spec
    from rlrings.rpc import wire
    from rlrings.rpc.security import PLAINTEXT

    spec = ModelSpec.for_env(env_spec("CartPole-v1"), "appo")
    with ParameterClient(address, security=security or PLAINTEXT) as client:
        client.wait_ready(10)
        version = client.publish(weights_to_bytes(build_model(spec)), wire.model_spec_to_proto(spec))
        assert client.report_evaluation(version, 20.0, episodes=100, confirmed=True) == version
        return version


def test_the_front_pages_game_team_uploads_downloads_and_acts(tmp_path, start_replay, start_parameter):
    """The front page's game team, with one token of scopes insert, read and act, over TLS: 256 steps
    reach replay, the best model comes down, and the inference service acts for 16 players."""
    import shutil

    import yaml

    from rlrings.rpc import certs
    from rlrings.rpc.config import load_config
    from rlrings.rpc.security import AuthConfig, ClientSecurity, TlsConfig
    from rlrings.services.inference.config import InferenceConfig
    from rlrings.services.inference.server import InferenceServer

    ca = certs.make_ca(tmp_path / "ca")
    pair = certs.issue(ca, tmp_path / "ca", "mesh", ["127.0.0.1", "localhost"])
    (tmp_path / "certs").mkdir()
    shutil.copy(ca.cert_file, tmp_path / "certs" / "ca.pem")
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump([
        {"name": "game-team", "token": "game-team-token-0123456789", "scopes": ["insert", "read", "act"]},
        {"name": "mesh", "token": "mesh-token-0123456789abcdef", "scopes": ["read", "publish"]},
    ]))  # fmt: skip
    tls = {"cert_file": pair.cert_file, "key_file": pair.key_file, "ca_file": ca.cert_file}
    auth = {"tokens_file": tokens, "token": "mesh-token-0123456789abcdef"}
    table = yaml.safe_load(snippet("replay-config"))["tables"][0]
    replay = start_replay([table], tls=tls, auth=auth)
    parameter = start_parameter(tls=tls, auth=auth)
    mesh = ClientSecurity.of(TlsConfig(ca_file=ca.cert_file), AuthConfig(token="mesh-token-0123456789abcdef"))
    version = publish_cartpole_model(parameter.address, mesh)
    settings = {"port": 0, "metrics_port": 0, "device": "cpu", "tls": tls, "auth": auth}
    inference = InferenceServer(
        load_config(InferenceConfig, [], parameter_address=parameter.address, **settings)
    ).start()
    try:
        code = snippet("game-team")
        for service, server in (("8000", replay), ("8001", parameter), ("8005", inference)):
            assert code.count(f'"localhost:{service}"') == 1
            code = code.replace(f'"localhost:{service}"', f'"localhost:{server.address.rsplit(":", 1)[1]}"')
        (tmp_path / "game_team.py").write_text(code)
        token = {"RLRINGS_TOKEN": "game-team-token-0123456789"}
        result = subprocess.run([sys.executable, "game_team.py"], capture_output=True, text=True, timeout=300,
                                cwd=tmp_path, env={**os.environ, **token})  # fmt: skip
    finally:
        inference.stop(grace=0)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("uploaded 256 steps; version ")]
    actions = eval(line.split(" acts ", 1)[1])  # a list of ints, printed by the snippet
    assert line.startswith(f"uploaded 256 steps; version {version} ") and len(actions) == 16
    assert set(actions) <= {0, 1}  # CartPole's two actions
    with ReplayClient(replay.address, security=mesh) as client:
        assert client.info(["experience"])["experience"].inserted_items == 256


def test_rendering_a_running_meshs_model(tmp_path, start_parameter):
    """The viewer page's render command against a live parameter service: a video of the best version."""
    parameter = start_parameter()
    publish_cartpole_model(parameter.address)
    port = parameter.address.rsplit(":", 1)[1]
    result = run_shell_snippet("render-from-service", tmp_path, substitute={"localhost:8001": f"localhost:{port}"},
                               timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (tmp_path / "agent.mp4").stat().st_size > 1_000

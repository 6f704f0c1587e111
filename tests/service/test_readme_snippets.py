"""The README's replay configuration and client snippet, run exactly as written (but for the
port), against a real replay process; and what a sampler waiting on the rate limiter is told."""

import os
import subprocess
import sys

import pytest

from rlrings.clients.replay import ReplayClient
from rlrings.core.errors import DeadlineExceededError
from rlrings.ops.processes import free_port
from tests.helpers import readme_block


@pytest.fixture
def readme_replay(tmp_path):
    """``rlrings replay --config replay.yaml`` with the README's file; flags move the ports and the
    snapshot directory into the test's own (flags beat the file, as the README says)."""
    config = tmp_path / "replay.yaml"
    config.write_text(readme_block("yaml", "# replay.yaml"))
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


def test_the_readme_client_snippet_runs_as_written(readme_replay, tmp_path):
    snippet = readme_block("python", "player = threading.Thread")
    assert snippet.count('"localhost:8000"') == 1
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace('"localhost:8000"', f'"{readme_replay}"'))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with ReplayClient(readme_replay) as client:
        table = client.info(["experience"])["experience"]
    assert table.inserted_items == 7_000 and table.sampled_items == 25_600


def test_a_sample_held_back_by_the_rate_limiter_says_what_it_waits_for(readme_replay):
    with ReplayClient(readme_replay) as client, pytest.raises(DeadlineExceededError) as raised:
        next(iter(client.sample("experience", batch_size=256, num_batches=1, timeout=1)))
    message = str(raised.value)
    assert "table 'experience'" in message and "it waits for 1,000 more inserts" in message, message


def test_the_readme_upload_with_a_token_runs_as_written(tmp_path, start_replay):
    """The README's SDK upload: an insert-only token over TLS, against the README's table."""
    import yaml

    from rlrings.rpc import certs
    from rlrings.rpc.security import AuthConfig, ClientSecurity, TlsConfig

    ca = certs.make_ca(tmp_path / "certs")
    pair = certs.issue(ca, tmp_path / "certs", "replay", ["127.0.0.1", "localhost"])
    table = yaml.safe_load(readme_block("yaml", "# replay.yaml"))["tables"][0]
    tokens = tmp_path / "tokens.yaml"
    entries = [{"name": "game-uploads", "token": "upload-token-0123456789", "scopes": ["insert"]},
               {"name": "ops", "token": "ops-token-0123456789abc", "scopes": ["read"]}]  # fmt: skip
    tokens.write_text(yaml.safe_dump(entries))
    server = start_replay(
        [table], tls={"cert_file": pair.cert_file, "key_file": pair.key_file}, auth={"tokens_file": tokens}
    )
    snippet = readme_block("python", "# upload.py")
    assert snippet.count('"localhost:8000"') == 1
    script = tmp_path / "upload.py"
    script.write_text(snippet.replace('"localhost:8000"', f'"localhost:{server.address.rsplit(":", 1)[1]}"'))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, env={**os.environ, "RLRINGS_TOKEN": "upload-token-0123456789"})  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "columns: {'obs': ('uint8', (64, 64, 3))" in result.stdout and "uploaded" in result.stdout
    ops = ClientSecurity.of(TlsConfig(ca_file=ca.cert_file), AuthConfig(token="ops-token-0123456789abc"))
    with ReplayClient(server.address, security=ops) as client:
        assert client.info(["experience"])["experience"].inserted_items == 64

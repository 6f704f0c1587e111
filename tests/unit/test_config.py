import socket

import pytest

from rlrings.core.errors import ConfigError
from rlrings.rpc.config import load_config
from rlrings.services.replay.config import ReplayConfig, TableConfig
from tests.helpers import table

TABLES_YAML = """
port: 7000
tables:
  - name: experience
    max_size: 500
    signature:
      obs: {dtype: uint8, shape: [4]}
"""


def test_flags_beat_environment_beat_file_beat_defaults(tmp_path, monkeypatch):
    path = tmp_path / "replay.yaml"
    path.write_text(TABLES_YAML + "metrics_port: 7001\nworkers: 3\n")
    monkeypatch.setenv("RLRINGS_REPLAY_METRICS_PORT", "7002")
    monkeypatch.setenv("RLRINGS_REPLAY_WORKERS", "5")
    config = load_config(ReplayConfig, ["--config", str(path), "--workers", "9"])
    assert config.port == 7000  # file
    assert config.metrics_port == 7002  # environment over file
    assert config.workers == 9  # flag over environment
    assert config.grace_seconds == 5.0  # default
    assert config.tables[0].max_size == 500 and config.tables[0].signature["obs"].shape == [4]


def test_config_file_from_environment(tmp_path, monkeypatch):
    path = tmp_path / "replay.yaml"
    path.write_text(TABLES_YAML)
    monkeypatch.setenv("RLRINGS_REPLAY_CONFIG", str(path))
    assert load_config(ReplayConfig, []).tables[0].name == "experience"


def test_unreadable_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*missing.yaml: cannot read it"):
        load_config(ReplayConfig, ["--config", str(tmp_path / "missing.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("tables: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(ReplayConfig, ["--config", str(bad)])
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping of settings, found list"):
        load_config(ReplayConfig, ["--config", str(bad)])


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ([], "tables: none configured; give at least one"),
        ([table("a"), table("a")], r"duplicate table names \['a'\]"),
        ([table(signature={"x": {"dtype": "complex64"}})], r"tables\.0\.signature\.x\.dtype: .*unsupported dtype"),
        ([table(signature={"x": {"dtype": "uint8", "shape": [-1]}})], r"tables\.0\.signature\.x\.shape\.0"),
        ([table(max_size=0)], r"tables\.0\.max_size"),
        ([table(selector="random")], r"tables\.0\.selector"),
        ([table(rate_limiter={"samples_per_insert": 2.0})], "needs error_buffer"),
        ([table(bogus=1)], r"tables\.0\.bogus: Extra inputs are not permitted"),
    ],
)
def test_bad_tables_are_refused_naming_the_setting(tables, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ReplayConfig, [], tables=tables)


def test_bad_flag_values_name_the_flag():
    with pytest.raises(ConfigError, match=r"port: .*\(got 'abc'\)"):
        load_config(ReplayConfig, ["--port", "abc"], tables=[table()])
    with pytest.raises(ConfigError, match="workers"):
        load_config(ReplayConfig, ["--workers", "0"], tables=[table()])


def test_queue_preset_is_a_blocking_fifo():
    queue = TableConfig.queue("q", {"x": {"dtype": "float32"}}, max_size=8)
    assert queue.selector == "fifo" and queue.max_times_sampled == 1
    assert queue.rate_limiter.bounds() == (0, 8)


def test_actor_seed_null_draws_a_different_seed_per_process():
    from rlrings.services.actor.config import ActorConfig

    assert load_config(ActorConfig, []).seed == 0
    seeds = {load_config(ActorConfig, [], seed=None).seed for _ in range(4)}
    assert len(seeds) == 4 and all(isinstance(s, int) for s in seeds)


def test_cassandra_settings_come_from_file_and_secret_env(monkeypatch):
    monkeypatch.setenv("RLRINGS_REPLAY_CASSANDRA__PASSWORD", "s3cret-from-a-secret")
    config = load_config(
        ReplayConfig,
        [],
        tables=[table("t")],
        store="cassandra",
        cassandra={"contact_points": ["10.0.0.4", "10.0.0.5"], "consistency": "LOCAL_QUORUM"},
    )
    assert config.cassandra.contact_points == ["10.0.0.4", "10.0.0.5"]
    assert config.cassandra.password.get_secret_value() == "s3cret-from-a-secret"
    assert "s3cret" not in repr(config)
    assert config.cassandra.shard == socket.gethostname()  # a StatefulSet pod's stable name
    with pytest.raises(ConfigError, match="cassandra.shard"):
        load_config(ReplayConfig, [], tables=[table("t")], cassandra={"shard": "two words"})
    with pytest.raises(ConfigError, match="cassandra.consistency"):
        load_config(ReplayConfig, [], tables=[table("t")], cassandra={"consistency": "MOST"})


def test_replay_derives_its_tables_from_env_algorithm_and_mesh_and_names_what_is_wrong():
    config = load_config(ReplayConfig, [], env="CartPole-v1", algorithm={"name": "dqn"}, mesh={"actors": 4})
    experience, demonstrations = config.tables
    assert (experience.name, experience.selector) == ("experience", "prioritized")
    assert demonstrations.name == "demonstrations"
    queue = load_config(ReplayConfig, [], env="CartPole-v1", mesh={"actors": 3, "envs_per_actor": 5}).tables[0]
    assert queue.selector == "fifo" and queue.max_size == 2 * 16 + 3 * 5  # the default algorithm's queue
    with pytest.raises(ConfigError, match="env: unknown env id 'Nope-v0'|env: .*Nope-v0"):
        load_config(ReplayConfig, [], env="Nope-v0")
    with pytest.raises(ConfigError, match="'epochs' is not a setting of dqn"):
        load_config(ReplayConfig, [], env="CartPole-v1", algorithm={"name": "dqn", "epochs": 2})
    with pytest.raises(ConfigError, match="dqn supports Discrete actions"):
        load_config(ReplayConfig, [], env="Pendulum-v1", algorithm="dqn")


def test_the_config_flag_is_read_by_the_settings_own_parser(tmp_path):
    """--config in any spelling the parser takes, before or after the other flags and the
    algorithm's: the file is the weakest source, the flags win."""
    from rlrings.mesh import MeshConfig

    path = tmp_path / "mesh.yaml"
    path.write_text("actors: 3\nseed: 7\nalgorithm: {name: ppo, epochs: 2}\n")
    for argv in (
        ["--config", str(path), "--seed", "9"],
        [f"--config={path}", "--seed", "9"],
        ["--algorithm.epochs", "5", "--seed", "9", "--config", str(path)],
    ):
        mesh = load_config(MeshConfig, argv)
        assert (mesh.actors, mesh.seed, mesh.algorithm.name) == (3, 9, "ppo"), argv
    assert load_config(MeshConfig, argv).algorithm.epochs == 5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["models", "pull", "--run", "runs/x", "--address", "h:1"], "--run and --address: give one of them"),
        (["render", "--episodes", "0"], "--episodes: Input should be greater than 0"),
        (["tables", "--actors", "0"], "--actors: Input should be greater than 0"),
        (["cloud", "status", "--subscription-id", "x", "--tenant-id", "y"], "--subscription-id: 'x' is not a GUID"),
    ],
)
def test_tool_commands_refuse_bad_flags_naming_them(argv, message, capsys):
    from rlrings.ops.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err

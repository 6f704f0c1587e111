"""What a user asks for is what runs: every algorithm setting, in every spelling, reaches the
learner's and the actors' effective configs, or is refused naming the setting and the algorithm."""

import json
import subprocess
import sys
import typing

import pydantic
import pytest

from rlrings import algorithms
from rlrings.core.errors import ConfigError
from rlrings.envs import env_spec
from rlrings.mesh import MeshConfig, plan
from rlrings.rpc.config import load_config
from rlrings.services.actor.config import ActorConfig
from rlrings.services.learner.config import LearnerConfig

ENVS = {"sac": "Pendulum-v1"}  # the others act in CartPole's Discrete actions
SHARED_BY_ACTORS = {"random_steps"}  # a total the mesh splits: each actor plays its share
VALUES = {"queue_size": 64}  # values the general rule below would make too small for a batch


def other_value(config: type[pydantic.BaseModel], key: str):
    """A valid value of ``key`` that is not its default."""
    if key in VALUES:
        return VALUES[key]
    field = config.model_fields[key]
    default = field.get_default(call_default_factory=True)
    kinds = {arg for arg in typing.get_args(field.annotation) if arg is not type(None)} or {field.annotation}
    kind = next(iter(kinds))
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return next(option for option in typing.get_args(kind) if option != default)
    if isinstance(default, list):
        return [48, 48]
    base = typing.get_origin(kind) and typing.get_args(kind)[0] or kind
    if base is bool:
        return not default
    if base is int:
        return 7 if default is None else default + 3
    if base is float:
        return 0.3 if default is None else (default * 0.9 if default else 0.1)
    raise AssertionError(f"{config.__name__}.{key}: no value for {field.annotation}")


def effective(service, tmp_path, cls):
    """The config a planned service loads from the file the supervisor would write it."""
    path = tmp_path / f"{service.name}.yaml"
    path.write_text(json.dumps(service.config))
    return load_config(cls, ["--config", str(path)])


@pytest.mark.parametrize("name", algorithms.NAMES)
def test_every_setting_of_every_algorithm_reaches_the_learner_and_every_actor(name, tmp_path):
    config_cls = algorithms.REGISTRY[name].Config
    spec = env_spec(ENVS.get(name, "CartPole-v1"))
    keys = [key for key in config_cls.model_fields if key != "name"]
    assert keys
    for i, key in enumerate(keys):
        value = other_value(config_cls, key)
        spellings = [
            ["--algorithm", name, f"--algorithm.{key.replace('_', '-')}", json.dumps(value)],
            [f"--algorithm.{key}={json.dumps(value)}", "--algorithm", name],  # the name after the setting
            ["--algorithm", json.dumps({"name": name, key: value})],
        ]
        mesh = load_config(MeshConfig, ["--env", spec.env_id, "--actors", "2", *spellings[i % 3]])
        assert getattr(mesh.algorithm, key) == value, (key, spellings[i % 3])
        services = {s.name: s for s in plan(mesh, spec, tmp_path / key)}
        learner = effective(services["learner"], tmp_path, LearnerConfig).algorithm
        assert (learner.name, getattr(learner, key)) == (name, value), key
        for actor in ("actor-0", "actor-1"):
            acting = effective(services[actor], tmp_path, ActorConfig).algorithm
            expected = value // 2 if key in SHARED_BY_ACTORS else value
            assert (acting.name, getattr(acting, key)) == (name, expected), (actor, key)


def test_sources_compose_key_by_key_file_then_environment_then_flags_in_order(tmp_path, monkeypatch):
    path = tmp_path / "up.yaml"
    path.write_text("algorithm: {name: ppo, epochs: 2, clip: 0.1, minibatches: 8}\nactors: 3\n")
    monkeypatch.setenv("RLRINGS_UP_ALGORITHM__EPOCHS", "5")
    monkeypatch.setenv("RLRINGS_UP_ALGORITHM__LEARNING_RATE", "0.002")
    config = load_config(MeshConfig, ["--config", str(path), "--algorithm.epochs", "8", "--algorithm.clip=0.25"])
    ppo = config.algorithm
    assert (ppo.name, ppo.epochs, ppo.clip, ppo.minibatches, ppo.learning_rate) == ("ppo", 8, 0.25, 8, 0.002)
    assert config.actors == 3
    # a later name keeps the keys given before it; the last value of a key wins
    ppo = load_config(MeshConfig, ["--algorithm.epochs", "3", "--algorithm", "appo", "--algorithm.epochs", "6"])
    assert (ppo.algorithm.name, ppo.algorithm.epochs) == ("appo", 6)
    monkeypatch.setenv("RLRINGS_UP_ALGORITHM", "dqn")
    with pytest.raises(ConfigError, match="'epochs' is not a setting of dqn"):  # (the variable above)
        load_config(MeshConfig, [])
    monkeypatch.delenv("RLRINGS_UP_ALGORITHM__EPOCHS")
    monkeypatch.delenv("RLRINGS_UP_ALGORITHM__LEARNING_RATE")
    assert load_config(MeshConfig, []).algorithm.name == "dqn"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--algorithm", "foo"], "algorithm: unknown algorithm 'foo'; choose one of: impala, dqn, ppo, appo, sac, bc"),
        (["--algorithm", "impala", "--algorithm.epochs", "8"],
         "algorithm: 'epochs' is not a setting of impala (a setting of appo, ppo); impala's settings: gamma"),
        (["--algorithm.baseline-cost", "1"], "'baseline_cost' is not a setting of appo"),  # no name: the default's
        (["--algorithm", "ppo", "--algorithm.epohcs", "8"], "'epohcs' is not a setting of ppo; did you mean 'epochs'"),
        (["--algorithm", '{"name": "ppo", "epochs": 8'], "--algorithm: not valid JSON"),
        (["--algorithm", "ppo", "--algorithm.epochs", "eight"], "algorithm.epochs: Input should be a valid integer"),
        (["--algorithm"], "--algorithm needs a value"),
    ],
)  # fmt: skip
def test_bad_algorithm_settings_are_refused_naming_the_setting(flags, message):
    with pytest.raises(ConfigError) as refused:
        load_config(MeshConfig, flags)
    assert message in str(refused.value)


def test_a_setting_from_the_file_for_another_algorithm_is_refused_not_dropped(tmp_path, monkeypatch):
    path = tmp_path / "up.yaml"
    path.write_text("algorithm: {name: dqn, replay_ratio: 4}\n")
    with pytest.raises(ConfigError, match="'replay_ratio' is not a setting of ppo"):
        load_config(MeshConfig, ["--config", str(path), "--algorithm", "ppo"])
    monkeypatch.setenv("RLRINGS_UP_ALGORITHM", "{not json")
    with pytest.raises(ConfigError, match="RLRINGS_UP_ALGORITHM: not valid JSON"):
        load_config(MeshConfig, [])


def test_a_given_epsilon_is_every_actors_and_the_spread_is_the_default(tmp_path):
    spec = env_spec("CartPole-v1")
    given = ["--algorithm", "dqn", "--algorithm.epsilon", "0.2"]
    for flags, expected in ((["--algorithm", "dqn"], None), (given, 0.2)):
        config = load_config(MeshConfig, ["--actors", "3", *flags])
        actors = [s for s in plan(config, spec, tmp_path) if s.name.startswith("actor-")]
        epsilons = [effective(actor, tmp_path, ActorConfig).algorithm.epsilon for actor in actors]
        if expected is None:
            assert epsilons == sorted(epsilons, reverse=True) and len(set(epsilons)) == 3
        else:
            assert epsilons == [expected] * 3


def rlrings(*argv):
    return subprocess.run([sys.executable, "-m", "rlrings.ops.cli", *argv], capture_output=True, text=True, timeout=120)


def test_help_names_every_algorithm_and_env_family_and_each_algorithms_own_defaults():
    general = rlrings("up", "--help")
    assert general.returncode == 0, general.stderr
    for name, algorithm in algorithms.REGISTRY.items():
        assert f"  {name} " in general.stdout and algorithm.summary in general.stdout
    for family in ("ALE/<Game>-v5[?sticky=P]", "task:<family>/<task>", "Reacher-v5", "crafter", "minerl:"):
        assert family in general.stdout, family
    ppo = rlrings("up", "--algorithm", "ppo", "--help").stdout
    assert "--algorithm.epochs int > 0  (default 4)" in ppo
    assert "--algorithm.learning-rate float > 0  (default 0.0003)" in ppo  # PPO's, not IMPALA's 0.0005
    assert "--algorithm.unroll-length int > 0  (default 32)" in ppo
    listed = rlrings("algorithms", "ppo").stdout
    assert listed.split("settings of ppo")[1] in ppo.split("settings of ppo")[1]
    unknown = rlrings("algorithms", "foo")
    assert unknown.returncode == 2 and "unknown algorithm 'foo'; choose one of: impala, dqn" in unknown.stderr
    for command in ("up", "learner", "actor", "replay", "parameter", "viewer"):
        text = rlrings(command, "--help").stdout
        assert "usage:" in text and "``" not in text and ":class:" not in text and ":data:" not in text, command
    for name in algorithms.NAMES:
        for flag, _, _, doc in algorithms.settings_table(name):
            assert doc, f"{name} {flag} has no docstring to show"


@pytest.mark.parametrize("name", algorithms.NAMES)
def test_a_learner_started_by_hand_takes_the_batch_size_the_mesh_plans(name, tmp_path):
    """``rlrings learner --algorithm dqn`` trains at DQN's batch (128), as ``rlrings up`` does, not at 16."""
    spec = env_spec(ENVS.get(name, "CartPole-v1"))
    services = {s.name: s for s in plan(load_config(MeshConfig, ["--algorithm", name]), spec, tmp_path)}
    planned = effective(services["learner"], tmp_path, LearnerConfig).batch_size
    assert load_config(LearnerConfig, ["--algorithm", name]).batch_size == planned
    assert planned == algorithms.REGISTRY[name].default_batch_size
    assert load_config(LearnerConfig, ["--algorithm", name, "--batch-size", "8"]).batch_size == 8


def test_rlrings_tables_prints_what_replay_derives_for_the_same_mesh():
    import yaml

    from rlrings.services.replay.config import ReplayConfig

    printed = rlrings("tables", "--env", "CartPole-v1", "--algorithm", "dqn", "--actors", "3", "--envs-per-actor", "5")
    assert printed.returncode == 0, printed.stderr
    derived = ReplayConfig(env="CartPole-v1", algorithm="dqn", mesh={"actors": 3, "envs_per_actor": 5}).tables
    assert yaml.safe_load(printed.stdout) == [table.model_dump(exclude_unset=True) for table in derived]
    default = yaml.safe_load(rlrings("tables", "--actors", "2").stdout)[0]
    assert default["sequence_length"] == algorithms.default_config().unroll_length + 1  # the default algorithm's queue


def test_a_learner_or_actor_started_by_hand_on_atari_takes_the_settings_of_record_unless_given():
    learner = load_config(LearnerConfig, ["--env", "ALE/Pong-v5", "--algorithm", "ppo"]).algorithm
    assert (learner.learning_rate, learner.clip, learner.unroll_length) == (2.5e-4, 0.1, 128)
    actor = load_config(ActorConfig, ["--env", "ALE/Pong-v5", "--algorithm", "ppo", "--algorithm.unroll-length", "64"])
    assert (actor.algorithm.clip, actor.algorithm.unroll_length) == (0.1, 64)
    assert load_config(LearnerConfig, ["--algorithm", "ppo"]).algorithm.clip == 0.2  # CartPole: the defaults
    assert "on atari envs, where not given: --algorithm.learning-rate 0.00025, --algorithm.clip 0.1" in (
        rlrings("algorithms", "appo").stdout
    )


def test_the_default_algorithm_started_by_hand_on_a_mujoco_robot_takes_its_settings_of_record():
    learner = load_config(LearnerConfig, ["--env", "Reacher-v5"]).algorithm
    assert learner.name == algorithms.DEFAULT == "appo"
    assert (learner.epochs, learner.minibatches, learner.entropy_cost) == (10, 8, 0.0)
    assert learner.normalize_observations and learner.preserve_values
    actor = load_config(ActorConfig, ["--env", "Hopper-v5", "--algorithm.epochs", "3"]).algorithm
    assert (actor.epochs, actor.minibatches) == (3, 8), "a given setting is kept"
    assert not load_config(LearnerConfig, ["--env", "Pendulum-v1"]).algorithm.normalize_observations
    assert "on mujoco envs, where not given: --algorithm.normalize-observations true" in (
        rlrings("algorithms", "appo").stdout
    )

"""One planner: a pod of the chart runs the settings the same process of ``rlrings up`` runs.

For each algorithm and mesh shape, the chart is rendered with values that say what the
``rlrings up`` flags say; every actor pod (by its StatefulSet ordinal), the learner ranks and
the replay shard load their settings as they would in the cluster (config file from the
ConfigMap, environment from the pod spec), and the result is compared, actor by actor, with
what the supervisor would start from ``plan()``.
"""

from __future__ import annotations

import pytest
import yaml

from rlrings import algorithms
from rlrings.envs import env_spec
from rlrings.mesh import MeshConfig, plan
from rlrings.rpc.config import load_config
from tests.deploy.helpers import CONFIGS, by_kind, render

ENVS = {"sac": "Pendulum-v1"}
SHAPES = {
    "four-actors": {"actors": 4, "envs_per_actor": 8, "learners": 1, "batch_size": None, "max_env_steps": 1_000_000,
                    "epsilon_decay_env_steps": 100_000, "seed": 0, "algorithm": {}},
    # (ppo's 12 envs make 12 unrolls a version: 2 ranks x 6 fit, more would leave its actors waiting)
    "ring-of-two": {"actors": 4, "envs_per_actor": 3, "learners": 2, "batch_size": 6, "max_env_steps": 300_000,
                    "epsilon_decay_env_steps": 40_000, "seed": 7, "algorithm": {"gamma": 0.98}},
}  # fmt: skip


def chart_values(name: str, shape: dict, env: str | None = None) -> dict:
    s = shape
    return {
        "env": env or ENVS.get(name, "CartPole-v1"),
        "algorithm": {"name": name, **s["algorithm"]},
        "maxEnvSteps": s["max_env_steps"],
        "epsilonDecayEnvSteps": s["epsilon_decay_env_steps"],
        "seed": s["seed"],
        "actor": {"replicas": s["actors"], "numEnvs": s["envs_per_actor"]},
        "learner": {"batchSize": s["batch_size"], "ring": {"ranks": s["learners"]}, "gpusPerRank": 0},
    }


def up_flags(name: str, shape: dict, env: str | None = None) -> list[str]:
    s = shape
    flags = ["--env", env or ENVS.get(name, "CartPole-v1"), "--algorithm", name, "--actors", str(s["actors"]),
             "--envs-per-actor", str(s["envs_per_actor"]), "--learners", str(s["learners"]),
             "--max-env-steps", str(s["max_env_steps"]), "--epsilon-decay-env-steps",
             str(s["epsilon_decay_env_steps"]), "--seed", str(s["seed"])]  # fmt: skip
    if s["batch_size"]:
        flags += ["--batch-size", str(s["batch_size"])]
    for key, value in s["algorithm"].items():
        flags += [f"--algorithm.{key}", str(value)]
    return flags


def effective(prefix: str, file_values: dict, environment: dict[str, str], tmp_path, monkeypatch):
    """A service's settings as its process loads them: a config file and its environment."""
    path = tmp_path / f"{prefix.lower()}-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(file_values))
    with monkeypatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        patch.setenv(f"RLRINGS_{prefix}_CONFIG", str(path))
        return load_config(CONFIGS[prefix], [])


def chart_pods(objects: list[dict], prefix: str) -> list[tuple[dict, dict[str, str]]]:
    """(config file, environment) of each pod of the component whose settings are RLRINGS_<prefix>_*:
    one per replica, with the environment the kubelet would give that replica."""
    config_maps = {c["metadata"]["name"]: c["data"] for c in by_kind(objects, "ConfigMap")}
    pods = []
    for workload in by_kind(objects, "StatefulSet"):
        spec = workload["spec"]["template"]["spec"]
        (container,) = [c for c in spec["containers"] if any(e["name"] == f"RLRINGS_{prefix}_CONFIG"
                                                              for e in c.get("env", []))] or [None]  # fmt: skip
        if container is None:
            continue
        volume = next(v for v in spec["volumes"] if v["name"] == "config")
        file_values = yaml.safe_load(config_maps[volume["configMap"]["name"]]["config.yaml"])
        for ordinal in range(workload["spec"]["replicas"]):
            environment = {}
            for var in container["env"]:
                if "value" in var:
                    environment[var["name"]] = var["value"]
                elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == (
                    "metadata.labels['apps.kubernetes.io/pod-index']"
                ):
                    environment[var["name"]] = str(ordinal)
            environment = {k: v for k, v in environment.items() if k.startswith(f"RLRINGS_{prefix}_")
                           and k.split(f"RLRINGS_{prefix}_")[1] in ("INDEX", "HOST")}  # fmt: skip
            pods.append((file_values, environment))
    return pods


PLANNED = {
    "ACTOR": ("algorithm", "seed", "num_envs", "env", "table", "index"),
    "LEARNER": ("algorithm", "batch_size", "seed", "env", "table"),
    "REPLAY": ("tables",),
}


def settings(config, prefix: str) -> dict:
    return {key: getattr(config, key) for key in PLANNED[prefix]} | (
        {"algorithm": config.algorithm.model_dump()} if prefix != "REPLAY" else {}
    )


def compare_every_pod_with_rlrings_up(name, shape, tmp_path, monkeypatch, env=None) -> dict[str, list]:
    """Renders the chart and plans rlrings up for the same values; asserts every pod runs what its
    process would; returns the pods' settings by prefix."""
    objects = render(chart_values(name, shape, env))
    config = load_config(MeshConfig, up_flags(name, shape, env))
    services = plan(config, env_spec(config.env), tmp_path / "run")
    by_prefix = {"ACTOR": "actor-", "LEARNER": "learner", "REPLAY": "replay"}
    found = {}
    for prefix, start in by_prefix.items():
        planned = [effective(prefix, s.config, {}, tmp_path, monkeypatch) for s in services if s.name.startswith(start)]
        pods = [effective(prefix, f, e, tmp_path, monkeypatch) for f, e in chart_pods(objects, prefix)]
        if prefix == "LEARNER":  # one StatefulSet of ranks: as many pods as rlrings up's learner processes
            assert len(pods) == len(planned) == shape["learners"]
        assert len(pods) == len(planned), prefix
        for pod, process in zip(pods, planned, strict=True):
            assert settings(pod, prefix) == settings(process, prefix), prefix
        found[prefix] = pods
    return found


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", ["impala", "appo", "ppo", "dqn", "sac", "bc"])
def test_every_pod_runs_what_the_same_process_of_rlrings_up_runs(name, shape, tmp_path, monkeypatch):
    compare_every_pod_with_rlrings_up(name, SHAPES[shape], tmp_path, monkeypatch)
    actors = compare_every_pod_with_rlrings_up(name, SHAPES[shape], tmp_path, monkeypatch)["ACTOR"]
    assert len({actor.seed for actor in actors}) == SHAPES[shape]["actors"], "every actor explores on its own seed"
    if name == "dqn":
        epsilons = [actor.algorithm.epsilon for actor in actors]
        assert epsilons == sorted(epsilons, reverse=True) and len(set(epsilons)) == len(epsilons)
    if name == "sac":
        shared = algorithms.get("sac").config().random_steps
        assert {actor.algorithm.random_steps for actor in actors} == {shared // SHAPES[shape]["actors"]}


@pytest.mark.parametrize("name", ["appo", "ppo"])
def test_on_atari_every_pod_and_rlrings_up_start_from_the_settings_of_record(name, tmp_path, monkeypatch):
    """The env's family picks PPO's and APPO's Atari settings where none were given, in every
    service alike (the unroll is the replay table's sequence length as well as the actors')."""
    unroll = {"appo": 32, "ppo": 128}[name]
    shape = SHAPES["four-actors"]
    pods = compare_every_pod_with_rlrings_up(name, shape, tmp_path, monkeypatch, env="ALE/Pong-v5")
    for pod in pods["ACTOR"] + pods["LEARNER"]:
        assert (pod.algorithm.learning_rate, pod.algorithm.clip, pod.algorithm.unroll_length) == (2.5e-4, 0.1, unroll)
    assert pods["REPLAY"][0].tables[0].sequence_length == unroll + 1
    given = {**shape, "algorithm": {"clip": 0.2}}  # what the user gives stays theirs
    pods = compare_every_pod_with_rlrings_up(name, given, tmp_path, monkeypatch, env="ALE/Pong-v5")
    assert {pod.algorithm.clip for pod in pods["ACTOR"] + pods["LEARNER"]} == {0.2}
    assert {pod.algorithm.learning_rate for pod in pods["LEARNER"]} == {2.5e-4}


def test_an_actor_outside_the_mesh_is_refused_naming_its_index(tmp_path, monkeypatch):
    objects = render(chart_values("dqn", SHAPES["four-actors"]))
    file_values, environment = chart_pods(objects, "ACTOR")[0]
    from rlrings.core.errors import ConfigError

    with pytest.raises(ConfigError, match="index: 4 is outside the mesh's 4 actors"):
        effective("ACTOR", file_values, {**environment, "RLRINGS_ACTOR_INDEX": "4"}, tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match="index: an actor of a mesh needs its place"):
        effective("ACTOR", file_values, {}, tmp_path, monkeypatch)


@pytest.mark.parametrize(
    ("algorithm", "complaint"),
    [({"name": "impala", "epochs": 4}, "epochs"), ({"name": "foo"}, "/algorithm/name"), ({"epsilon": 0.1}, "epsilon")],
)
def test_the_chart_refuses_settings_the_algorithm_lacks(algorithm, complaint):
    import helm_python

    with pytest.raises(helm_python.HelmValuesError, match=complaint):
        render({"algorithm": algorithm})


def test_with_central_inference_every_actor_asks_the_inference_service_as_rlrings_up_actors_do(tmp_path, monkeypatch):
    shape = SHAPES["four-actors"]
    objects = render(chart_values("appo", shape, "ALE/Pong-v5") | {"inference": {"enabled": True}})
    config = load_config(MeshConfig, [*up_flags("appo", shape, "ALE/Pong-v5"), "--inference", "central"])
    services = plan(config, env_spec(config.env), tmp_path / "run")
    (inference,) = [s for s in services if s.name == "inference"]
    planned = [effective("ACTOR", s.config, {}, tmp_path, monkeypatch) for s in services if s.name.startswith("actor-")]
    pods = [effective("ACTOR", f, e, tmp_path, monkeypatch) for f, e in chart_pods(objects, "ACTOR")]
    assert len(pods) == len(planned) == shape["actors"]
    for pod, process in zip(pods, planned, strict=True):
        assert settings(pod, "ACTOR") == settings(process, "ACTOR")
        assert pod.env_groups == process.env_groups == 2  # one group steps while the other's pass runs
        assert pod.env_threads == 2  # its CPU request (actor.envThreads): a node's actors share its cores
        assert process.inference_address == inference.address
        assert pod.inference_address.split(".")[0].endswith("-inference") and pod.inference_address.endswith(":8005")
    (deployment,) = [d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith("-inference")]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"] == ["inference"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1 and spec["nodeSelector"] == {"agentpool": "gpu"}
    config_map = next(c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-inference"))
    served = effective("INFERENCE", yaml.safe_load(config_map["data"]["config.yaml"]), {}, tmp_path, monkeypatch)
    assert served.device == "cuda" and served.parameter_address.split(".")[0].endswith("-parameter")

"""What a plan hands its services of the machine: a port of its own each, and the actors' share
of the cores."""

from __future__ import annotations

import os

from rlrings.envs import env_spec
from rlrings.mesh import plan
from rlrings.mesh.config import MeshConfig
from rlrings.mesh.plan import effective
from rlrings.ops.processes import free_port, usable_cores


def test_free_port_never_hands_out_a_port_twice():
    # the kernel gives a just-released port out again now and then (about 110 of 2,000 calls here)
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


def test_every_port_of_a_mesh_plan_is_its_own(tmp_path):
    config = MeshConfig(actors=8, learners=2, viewer=True)
    for _ in range(50):
        ports = [
            value
            for service in plan(config, env_spec("CartPole-v1"), tmp_path)
            for key, value in service.config.items()
            if key.endswith("port") and value
        ]
        assert len(ports) >= 2 * 12
        assert len(set(ports)) == len(ports)


def test_usable_cores_follow_the_affinity_and_a_containers_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert usable_cores(tmp_path) == affinity  # no cpu.max: the affinity alone
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path) == affinity
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # a pod limited to 1.5 cores may keep 2 busy
    assert usable_cores(tmp_path) == min(affinity, 2)
    (tmp_path / "cpu.max").write_text("10000 100000\n")
    assert usable_cores(tmp_path) == 1


def test_the_actors_of_a_plan_share_the_machines_cores_for_their_env_threads(tmp_path):
    cores = usable_cores()
    for actors in (1, 2, 3 * cores):
        config = MeshConfig(env="ALE/Pong-v5", actors=actors, envs_per_actor=8)
        actor_configs = [effective(s) for s in plan(config, env_spec("ALE/Pong-v5"), tmp_path) if "actor" in s.name]
        assert len(actor_configs) == actors
        assert {a.env_threads for a in actor_configs} == {min(8, max(1, cores // actors))}

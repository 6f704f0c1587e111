"""Ports for the services a plan starts: each one a port of its own."""

from __future__ import annotations

from rlrings.envs import env_spec
from rlrings.mesh import plan
from rlrings.mesh.config import MeshConfig
from rlrings.ops.processes import free_port


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

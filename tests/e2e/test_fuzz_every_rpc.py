"""Property-based fuzzing of every RPC of every service, against a live training mesh.

Requests are drawn from each method's own protobuf descriptor (every field
type, nested messages, repeated and map fields, odd numbers and strings), so
a new field or RPC is fuzzed without touching this file. The property: every
call ends with a status a client can act on (never INTERNAL or UNKNOWN), each
refusal explains itself, and every service still answers health checks
afterwards. HYPOTHESIS_PROFILE=long runs many more examples.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import grpc
import pytest
from google.protobuf import descriptor as pb
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlrings.v1 import actor_pb2, learner_pb2, parameter_pb2, replay_pb2, viewer_pb2

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVICES = {
    "replay": replay_pb2.DESCRIPTOR.services_by_name["ReplayService"],
    "parameter": parameter_pb2.DESCRIPTOR.services_by_name["ParameterService"],
    "learner": learner_pb2.DESCRIPTOR.services_by_name["LearnerService"],
    "actor-0": actor_pb2.DESCRIPTOR.services_by_name["ActorService"],
    "viewer": viewer_pb2.DESCRIPTOR.services_by_name["ViewerService"],
}
CLEAN = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # a stream that goes on (Watch, Sample) until the call's deadline
}
EXAMPLES = 300 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 12
_INTS = {
    pb.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    pb.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    pb.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    pb.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    pb.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    pb.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    pb.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    pb.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    pb.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    pb.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _scalar(field: pb.FieldDescriptor, depth: int) -> st.SearchStrategy:
    kind = field.type
    if kind in _INTS:
        low, high = _INTS[kind]
        return st.one_of(st.integers(max(low, -3), 40), st.integers(low, high))
    if kind in (pb.FieldDescriptor.TYPE_FLOAT, pb.FieldDescriptor.TYPE_DOUBLE):
        width = 32 if kind == pb.FieldDescriptor.TYPE_FLOAT else 64
        return st.floats(width=width, allow_nan=True, allow_infinity=True)
    if kind == pb.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == pb.FieldDescriptor.TYPE_STRING:
        return st.one_of(st.sampled_from(["", "experience", "latest", "CartPole-v1", "best"]), st.text(max_size=24))
    if kind == pb.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == pb.FieldDescriptor.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-2, 50))
    return messages(field.message_type, depth + 1)


def messages(descriptor: pb.Descriptor, depth: int = 0) -> st.SearchStrategy:
    """Messages of ``descriptor`` with a random subset of fields set (nesting bounded)."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    fields = {}
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            fields[field.name] = st.dictionaries(_scalar(key, depth), _scalar(value, depth), max_size=3)
        elif field.is_repeated:
            fields[field.name] = st.lists(_scalar(field, depth), max_size=4)
        else:
            fields[field.name] = _scalar(field, depth)
    chosen = st.fixed_dictionaries({}, optional=fields)

    def build(values: dict):
        message = cls()
        oneofs = set()
        for name, value in values.items():
            field = descriptor.fields_by_name[name]
            if field.containing_oneof is not None:
                if field.containing_oneof.name in oneofs:
                    continue
                oneofs.add(field.containing_oneof.name)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                target = getattr(message, name)
                for k, v in value.items():
                    if field.message_type.fields_by_name["value"].message_type is not None:
                        target[k].CopyFrom(v)
                    else:
                        target[k] = v
            elif field.is_repeated:
                if field.message_type is not None:
                    getattr(message, name).extend(value)
                else:
                    getattr(message, name)[:] = value
            elif field.message_type is not None:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return chosen.map(build)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fuzzed-mesh")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rlrings.ops.cli",
            "up",
            "--run-dir",
            str(run_dir),
            "--actors",
            "1",
            "--max-seconds",
            "900",
            "--max-env-steps",
            "0",  # no step budget: CartPole runs at ~20 k steps/s, so the default 1 M ended the mesh mid-fuzzing
            "--target-return",
            "1e9",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    addresses = {}
    deadline = time.monotonic() + 120
    while len(addresses) < len(SERVICES) and time.monotonic() < deadline:
        for name in SERVICES:
            path = run_dir / "configs" / f"{name}.yaml"
            if path.exists() and name not in addresses:
                address = f"127.0.0.1:{json.loads(path.read_text())['port']}"
                if serving(address):
                    addresses[name] = address
        time.sleep(0.5)
    assert len(addresses) == len(SERVICES), f"the mesh did not start: {sorted(addresses)}"
    channels = {name: grpc.insecure_channel(address) for name, address in addresses.items()}
    yield channels
    for channel in channels.values():
        channel.close()
    process.terminate()
    process.wait(120)


def serving(address: str) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def call(channel: grpc.Channel, method: pb.MethodDescriptor, requests: list) -> tuple[grpc.StatusCode, str]:
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_cls = message_factory.GetMessageClass(method.output_type)
    kinds = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }
    stub = kinds[(method.client_streaming, method.server_streaming)](
        path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response_cls.FromString
    )
    payload = iter(requests) if method.client_streaming else requests[0]
    try:
        result = stub(payload, timeout=1.5)
        if method.server_streaming:
            for _, _ in zip(range(3), result):  # a few responses are enough; then hang up
                pass
            result.cancel()
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.CANCELLED:  # we hung up
            return grpc.StatusCode.OK, ""
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


CASES = [(service, method) for service, descriptor in SERVICES.items() for method in descriptor.methods]


@pytest.mark.parametrize(("service", "method"), CASES, ids=[f"{s}.{m.name}" for s, m in CASES])
def test_random_requests_to_every_rpc_end_cleanly(mesh, service, method):
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(messages(method.input_type), min_size=1, max_size=3))
    def fuzz(requests):
        code, details = call(mesh[service], method, requests)
        assert code in CLEAN, f"{method.full_name}: {code.name}: {details}\nrequests: {requests}"
        if code != grpc.StatusCode.OK:
            assert details, f"{method.full_name}: {code.name} without a message"

    fuzz()


def test_every_service_still_serves_after_the_fuzzing(mesh):
    for name, channel in mesh.items():
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name

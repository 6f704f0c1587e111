"""gRPC server reflection, both versions, with the .proto files' comments.

grpcio-reflection serves only ``grpc.reflection.v1alpha`` and rebuilds each
file from the compiled descriptors, which carry no comments. A client written
from outside (grpcurl, Postman, a generated SDK's tooling) asks for
``grpc.reflection.v1`` first and shows the comments when they are there. So
this module serves both versions (their messages are the same on the wire)
from the descriptor set that ``make protos`` writes next to the generated code
(``rlrings/v1/rlrings.binpb``, compiled with ``--include_source_info``): the
contract's documentation travels with the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from importlib import resources

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
DESCRIPTOR_SET = "rlrings.binpb"
"""The descriptor set with source info, in the ``rlrings.v1`` package."""


def enable(service_names: Iterable[str], server: grpc.aio.Server, descriptors: Iterable[object] = ()) -> None:
    """Serves reflection v1 and v1alpha on ``server`` for ``service_names``. rlrings' own files come
    with their comments; ``descriptors`` (compiled file descriptors, health's for example) are
    served as compiled."""
    reflection = Reflection(service_names, descriptors)
    for name in (V1, V1ALPHA):
        handler = grpc.stream_stream_rpc_method_handler(
            reflection.info,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
        )


class Reflection:
    """The files and symbols a server describes, and the answers to reflection requests."""

    def __init__(self, service_names: Iterable[str], descriptors: Iterable[object] = ()):
        self.services = sorted({*service_names, V1, V1ALPHA})
        self._files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        self._symbols: dict[str, str] = {}
        documented = descriptor_pb2.FileDescriptorSet.FromString(
            resources.files("rlrings.v1").joinpath(DESCRIPTOR_SET).read_bytes()
        )
        for proto in documented.file:
            self._add(proto)
        for descriptor in (*descriptors, reflection_pb2.DESCRIPTOR):
            proto = descriptor_pb2.FileDescriptorProto()
            descriptor.CopyToProto(proto)
            self._add(proto)
        self._add(_v1_of(self._files[reflection_pb2.DESCRIPTOR.name]))

    def _add(self, proto: descriptor_pb2.FileDescriptorProto) -> None:
        if proto.name in self._files:
            return
        self._files[proto.name] = proto
        prefix = f"{proto.package}." if proto.package else ""

        def messages(types, scope: str) -> None:
            for message in types:
                name = scope + message.name
                self._symbols[name] = proto.name
                for enum in message.enum_type:
                    self._symbols[f"{name}.{enum.name}"] = proto.name
                messages(message.nested_type, f"{name}.")

        messages(proto.message_type, prefix)
        for enum in proto.enum_type:
            self._symbols[prefix + enum.name] = proto.name
        for service in proto.service:
            self._symbols[prefix + service.name] = proto.name
            for method in service.method:
                self._symbols[f"{prefix}{service.name}.{method.name}"] = proto.name

    async def info(self, requests: AsyncIterator, context) -> AsyncIterator:
        async for request in requests:
            yield self.answer(request)

    def answer(self, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        asked = request.WhichOneof("message_request")
        if asked == "list_services":
            listing = reflection_pb2.ListServiceResponse(
                service=[reflection_pb2.ServiceResponse(name=name) for name in self.services]
            )
            return reflection_pb2.ServerReflectionResponse(original_request=request, list_services_response=listing)
        if asked == "file_by_filename" and request.file_by_filename in self._files:
            return self._with_dependencies(request, request.file_by_filename)
        if asked == "file_containing_symbol" and request.file_containing_symbol in self._symbols:
            return self._with_dependencies(request, self._symbols[request.file_containing_symbol])
        if asked == "all_extension_numbers_of_type" and request.all_extension_numbers_of_type in self._symbols:
            numbers = reflection_pb2.ExtensionNumberResponse(base_type_name=request.all_extension_numbers_of_type)
            return reflection_pb2.ServerReflectionResponse(
                original_request=request, all_extension_numbers_response=numbers
            )
        code = grpc.StatusCode.NOT_FOUND if asked else grpc.StatusCode.INVALID_ARGUMENT
        what = getattr(request, asked) if asked and asked != "file_containing_extension" else asked
        error = reflection_pb2.ErrorResponse(
            error_code=code.value[0], error_message=f"{asked}: {what!r} is not known here"
        )
        return reflection_pb2.ServerReflectionResponse(original_request=request, error_response=error)

    def _with_dependencies(self, request, name: str) -> reflection_pb2.ServerReflectionResponse:
        """The file and every file it imports, transitively (the first is the one asked for)."""
        order, pending = [], [name]
        while pending:
            current = pending.pop()
            if current in order or current not in self._files:
                continue
            order.append(current)
            pending.extend(self._files[current].dependency)
        files = reflection_pb2.FileDescriptorResponse(
            file_descriptor_proto=[self._files[n].SerializeToString() for n in order]
        )
        return reflection_pb2.ServerReflectionResponse(original_request=request, file_descriptor_response=files)


def _v1_of(v1alpha: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """The v1 reflection file: v1alpha's messages and service under the v1 package."""
    v1 = descriptor_pb2.FileDescriptorProto()
    v1.CopyFrom(v1alpha)
    v1.name, v1.package = "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1"
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."

    def rename(types) -> None:
        for message in types:
            for field in message.field:
                if field.type_name.startswith(old):
                    field.type_name = new + field.type_name.removeprefix(old)
            rename(message.nested_type)

    rename(v1.message_type)
    for service in v1.service:
        for method in service.method:
            method.input_type = new + method.input_type.removeprefix(old)
            method.output_type = new + method.output_type.removeprefix(old)
    return v1

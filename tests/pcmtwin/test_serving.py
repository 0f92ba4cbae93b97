"""The serving skeleton both services share: reflection v1 and v1alpha, health, the hooks."""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from pcmtwin.codec import HOST_SERVICE, TWIN_SERVICE
from pcmtwin.credentials import make_channel
from pcmtwin.serving import GrpcServer, ServingOptions
from tests.controller.servers import InProcess

REFLECTION = {
    "v1": "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "v1alpha": "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}


def reflect(
    channel: grpc.Channel, version: str, **request
) -> reflection_pb2.ServerReflectionResponse:
    """One reflection request as a client of ``version`` sends it (the two versions' messages
    are the same on the wire, so v1alpha's classes encode v1's)."""
    call = channel.stream_stream(
        REFLECTION[version],
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return next(iter(call(iter([reflection_pb2.ServerReflectionRequest(**request)]), timeout=30)))


def test_both_services_serve_reflection_v1_and_v1alpha():
    """Twin and ChipHost list their service, health and both reflection versions under v1 and
    v1alpha, and describe a symbol of their own and v1 reflection itself."""
    s = InProcess()
    try:
        for address, own in ((s.twin.address, TWIN_SERVICE), (s.host.address, HOST_SERVICE)):
            with make_channel(address) as ch:
                for version in REFLECTION:
                    got = reflect(ch, version, list_services="")
                    names = {x.name for x in got.list_services_response.service}
                    assert names == {own, "grpc.health.v1.Health",
                                     "grpc.reflection.v1alpha.ServerReflection",
                                     "grpc.reflection.v1.ServerReflection"}  # fmt: skip
                    for symbol in (own, "grpc.reflection.v1.ServerReflection"):
                        got = reflect(ch, version, file_containing_symbol=symbol)
                        files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in
                                 got.file_descriptor_response.file_descriptor_proto]  # fmt: skip
                        assert any(symbol.rsplit(".", 1)[0] == f.package for f in files), symbol
    finally:
        s.close()


class _Probe(GrpcServer):
    service_name = "pcmtwin.test.Probe"
    banner = "Probe"

    def __init__(self, options: ServingOptions) -> None:
        super().__init__(options)
        self.calls: list[str] = []

    def open(self) -> None:
        self.calls.append(f"open {self.health_status()}")
        super().open()

    def health_status(self) -> str:
        with make_channel(self.address) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=self.service_name), timeout=10
            )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def before_stop(self) -> None:
        self.calls.append("before_stop")

    def after_stop(self) -> None:
        self.calls.append("after_stop")


def test_a_server_is_not_serving_until_open_returns_and_stops_once():
    """Health is NOT_SERVING while ``open`` runs, SERVING after; stop runs the hooks once, in
    order, however often it is called."""
    server = _Probe(ServingOptions(address="127.0.0.1:0"))
    with server:
        assert server.health_status() == "SERVING"
        assert server.describe() == f"Probe listening on {server.address} (plaintext)"
    server.stop()
    assert server.calls == ["open NOT_SERVING", "before_stop", "after_stop"]
    assert server.wait(0)

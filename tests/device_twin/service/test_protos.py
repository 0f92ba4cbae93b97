"""The committed generated code matches what the pinned grpcio-tools makes of every .proto."""

from __future__ import annotations

from pathlib import Path

from pcmtwin.generate import (
    GENERATED_SUFFIXES,
    PROTO_ROOT,
    REPO,
    generate,
    generated_names,
    proto_files,
)


def test_generated_code_is_fresh(tmp_path: Path):
    """Regenerating every protos/**/*.proto gives byte-identical committed modules; `make protos`
    fixes a failure."""
    written = generate(tmp_path)
    assert written, "no .proto files found"
    stale = [
        str(p.relative_to(tmp_path))
        for p in written
        if not (REPO / p.relative_to(tmp_path)).exists()
        or (REPO / p.relative_to(tmp_path)).read_bytes() != p.read_bytes()
    ]
    assert not stale, f"stale or missing generated code (run `make protos`): {stale}"


def test_every_generated_module_has_its_proto():
    """No generated module is left behind after its .proto was removed or renamed."""
    expected = {str(g) for p in proto_files() for g in generated_names(p)}
    present = {
        str(p.relative_to(REPO))
        for p in (REPO / "pcmtwin").rglob("*.py")
        if p.name.endswith(GENERATED_SUFFIXES)
    }
    assert present <= expected, f"generated modules without a .proto: {present - expected}"
    assert PROTO_ROOT.joinpath("pcmtwin/v1/twin.proto").exists()


def test_generated_modules_import():
    """The service and its messages are importable from pcmtwin.v1."""
    from pcmtwin.v1 import twin_pb2, twin_pb2_grpc

    assert twin_pb2.DESCRIPTOR.services_by_name["CrossbarTwin"].full_name == (
        "pcmtwin.v1.CrossbarTwin"
    )
    assert hasattr(twin_pb2_grpc, "CrossbarTwinStub")

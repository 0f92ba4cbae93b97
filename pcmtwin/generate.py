"""Generate the Python modules of every ``.proto`` under ``protos/`` (``make protos``).

``python -m pcmtwin.generate [OUT_DIR]`` runs the pinned grpcio-tools' protoc on all
``protos/**/*.proto`` and writes ``*_pb2.py`` and ``*_pb2_grpc.py`` next to
the package path of each file (``protos/pcmtwin/v1/twin.proto`` -> ``OUT_DIR/pcmtwin/v1/``).
OUT_DIR defaults to the repository root, where the generated code is committed.
"""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
# No .pyi stubs: the repository lints everything but generated *_pb2*.py modules.
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py")


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    """Every .proto under ``root``, sorted (paths relative to ``root``)."""
    return sorted(p.relative_to(root) for p in root.rglob("*.proto"))


def generated_names(proto: Path) -> list[Path]:
    """The modules protoc writes for one .proto (relative to the output root)."""
    stem = proto.with_suffix("")
    return [stem.parent / (stem.name + s) for s in GENERATED_SUFFIXES]


def generate(out_dir: Path = REPO, root: Path = PROTO_ROOT) -> list[Path]:
    """Run protoc on every .proto under ``root``; return the files written."""
    from grpc_tools import protoc

    protos = proto_files(root)
    if not protos:
        raise SystemExit(f"no .proto files under {root}")
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    # google/rpc/*.proto (rich error details) from googleapis-common-protos
    from google.rpc import status_pb2

    googleapis = str(Path(status_pb2.__file__).parents[2])
    out = str(out_dir)
    args = [
        "grpc_tools.protoc", f"-I{root}", f"-I{include}", f"-I{googleapis}",
        f"--python_out={out}",
        f"--grpc_python_out={out}", *[str(p) for p in protos],
    ]  # fmt: skip
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return [Path(out_dir) / g for p in protos for g in generated_names(p)]


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO):
        print(path)

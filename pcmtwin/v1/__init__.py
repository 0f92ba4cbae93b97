"""Generated protobuf and gRPC modules of the ``pcmtwin.v1`` API (do not edit by hand)."""

"""The controller's side of the wire: the one channel factory and ``TwinClient``, the
CrossbarTwin client that offers the in-process ``ChipRegistry``'s calls over gRPC."""

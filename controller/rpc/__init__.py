"""The controller's side of the wire: ``TwinClient``, the CrossbarTwin client that offers the
in-process ``ChipRegistry``'s calls over gRPC (channels from ``pcmtwin.credentials``, values
from ``pcmtwin.codec``, errors from ``pcmtwin.status``)."""

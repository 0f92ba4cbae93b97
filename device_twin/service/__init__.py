"""The twin as a gRPC service: the CrossbarTwin servicer (validation and translation only),
the server, and the durable state (write-ahead log and snapshots). Built on the pure core
(``device_twin``), which never imports anything from here."""

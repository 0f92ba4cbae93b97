"""The wire between pcm-twin's services and their clients.

- ``pcmtwin.v1``: the protobuf contracts as Python modules (``from pcmtwin.v1 import
  twin_pb2``), generated from ``protos/pcmtwin/v1/*.proto`` by ``make protos`` (``python -m
  pcmtwin.generate``) and committed; a test fails when they are stale.
- ``codec``: numpy arrays as ``Tensor`` messages, the twin's results and enums, message limits.
- ``status``: the one mapping between errors and gRPC statuses (with field violations).
- ``credentials``: bearer token and TLS, for servers and for the channels clients open.
- ``serving``: the server skeleton both services run on (bind policy, health, reflection).

It stands on the twin core (``device_twin``: the values and errors it translates), which
never imports it; the services and their clients stand on it.
"""

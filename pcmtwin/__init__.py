"""pcm-twin's protobuf contracts as Python modules: ``from pcmtwin.v1 import twin_pb2``.

The modules under ``pcmtwin/v1/`` are generated from ``protos/pcmtwin/v1/*.proto`` by
``make protos`` (``python -m pcmtwin.generate``) and committed; a test fails when they are
stale.
"""

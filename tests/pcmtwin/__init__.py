"""Tests of the wire layer (pcmtwin): codec, status mapping, credentials, serving."""

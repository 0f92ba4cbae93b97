"""The controller: the emulated on-chip firmware (a SimPy model), its correction policies,
the twin client, the host-facing service, and the command line."""

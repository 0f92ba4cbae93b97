"""The chip host: one emulated chip for host software (``chip_host.ChipHost``) and its
ChipHost gRPC servicer and server (``service``)."""

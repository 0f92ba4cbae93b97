"""Tests of the SimPy firmware model and its policies (controller.firmware)."""

"""Tests of the chip host and its ChipHost service (controller.host)."""

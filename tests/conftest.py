"""Shared test set-up: few torch threads (CI has 2 cores and tests run in parallel)."""

import torch

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Long tests (``@pytest.mark.slow``) first: ``make test`` runs on two pytest-xdist
    workers, and the longest (a year of the paper's CNN, about 7.5 minutes) sets the suite's
    wall time unless it starts at once while the other worker takes the rest."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

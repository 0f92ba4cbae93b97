"""Shared test set-up: few torch threads (CI has 2 cores and tests run in parallel)."""

import torch

torch.set_num_threads(1)

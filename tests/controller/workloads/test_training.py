"""Training: seeded and cached; the paper's options; hardware-aware; paper_cnn's accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from controller.workloads.datasets import load_dataset
from controller.workloads.mapping import map_network
from controller.workloads.quantisers import MultiplicativeQuantiser, UniformQuantiser
from controller.workloads.training import (
    accuracy,
    cache_dir,
    train_digital,
    train_hardware_aware,
)
from controller.workloads.training_config import HardwareAwareConfig, TrainingConfig
from device_twin.config import ChipConfig


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PCM_TWIN_CACHE_DIR", str(tmp_path))
    return tmp_path


def _crossbar_weights(desc) -> np.ndarray:
    return np.concatenate([la.weight.to_numpy().ravel() for _, la in desc.analog_layers()])


SHORT = TrainingConfig(epochs=3, batch_size=32, lr=0.01)


def test_same_seed_same_weights(tmp_cache):
    """Training twice with the same recipe gives bit-identical weights."""
    a = train_digital("digits_mlp", SHORT, cache=False)
    b = train_digital("digits_mlp", SHORT, cache=False)
    assert a.description == b.description and a.key == b.key
    c = train_digital("digits_mlp", SHORT.model_copy(update={"seed": 1}), cache=False)
    assert c.description != a.description and c.key != a.key


def test_trained_networks_are_cached_by_recipe(tmp_cache):
    """A second request loads the cached JSON description; a corrupt entry is retrained."""
    first = train_digital("digits_mlp", SHORT)
    second = train_digital("digits_mlp", SHORT)
    assert not first.cached and second.cached
    assert second.description == first.description
    files = list(cache_dir().glob("digits_mlp-digital-*.json"))
    assert len(files) == 1 and str(tmp_cache) in str(files[0])
    files[0].write_text("{not json")
    third = train_digital("digits_mlp", SHORT)
    assert not third.cached and third.description == first.description


def test_digits_mlp_default_recipe_learns(tmp_cache):
    """digits_mlp reaches at least 95 % on its 360 held-out digits."""
    t = train_digital("digits_mlp")
    assert t.test_accuracy >= 0.95
    assert accuracy(t.description.to_torch(), load_dataset("digits").test) == t.test_accuracy


def test_small_weight_penalty_and_clipping(tmp_cache):
    """The paper's penalty empties the band |w| < eps; clipping bounds every weight."""
    base = SHORT.model_copy(update={"clip_weights": 0.3})
    plain = _crossbar_weights(train_digital("digits_mlp", base, cache=False).description)
    pushed = _crossbar_weights(
        train_digital("digits_mlp", base.model_copy(update={"small_weight_penalty": 0.05}),
                      cache=False).description
    )  # fmt: skip
    assert np.abs(plain).max() <= 0.3 + 1e-6 and np.abs(pushed).max() <= 0.3 + 1e-6
    small = lambda w: float(np.mean(np.abs(w) < 0.1))  # noqa: E731
    assert small(pushed) < 0.5 * small(plain)


def test_hardware_aware_training_returns_a_clipped_digital_network(tmp_cache):
    """aihwkit fine-tuning (pure-torch tiles, weight noise) yields a valid description."""
    hwa = HardwareAwareConfig(epochs=2, noise_std=0.05, clip_weights=0.5)
    t = train_hardware_aware("digits_mlp", hwa, SHORT)
    assert t.kind == "hardware_aware" and t.description.metadata["training"] == "hardware_aware"
    base = train_digital("digits_mlp", SHORT)
    assert base.cached  # the digital start was trained (and cached) on the way
    w = _crossbar_weights(t.description)
    assert np.abs(w).max() <= 0.5 + 1e-6
    assert not np.array_equal(w, np.clip(_crossbar_weights(base.description), -0.5, 0.5))
    assert t.test_accuracy >= 0.85


def test_paper_cnn_reaches_94_percent_and_survives_quantisation():
    """paper_cnn (seeded) scores >= 94 % on the 1,000 held-out images, and quantisation alone
    (the paper's multiplicative and uniform, M = 8) costs at most one point."""
    t = train_digital("paper_cnn")  # the shared cache: trained once per run
    test = load_dataset("mnist").test
    assert t.test_accuracy >= 0.94
    for q in (MultiplicativeQuantiser(n_levels=8), UniformQuantiser(n_levels=8)):
        mapped = map_network(t.description, q, ChipConfig(n_tiles=3))
        assert accuracy(mapped.quantised.to_torch(), test) >= t.test_accuracy - 0.01, q.kind

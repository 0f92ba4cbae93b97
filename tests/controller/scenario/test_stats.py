"""Confidence intervals over seeds and test images, and paired comparisons of variants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from controller.scenario.stats import (
    accuracy_uncertainty,
    compare,
    compare_to_best,
    over_seeds,
    wilson_interval,
)

TRIALS = 4000  # a 95 % rate over 4000 trials has a standard error of 0.34 points


def test_the_interval_over_seeds_is_students_t_and_covers_95_percent() -> None:
    """over_seeds gives scipy's t interval of the mean, and over many draws of three seeds
    it holds the true mean 95 % of the time."""
    e = over_seeds([0.90, 0.92, 0.97, None, math.nan])
    lo, hi = sps.t.interval(0.95, 2, loc=np.mean([0.90, 0.92, 0.97]),
                            scale=sps.sem([0.90, 0.92, 0.97]))  # fmt: skip
    assert (e.n, e.ci_low, e.ci_high) == (3, pytest.approx(lo), pytest.approx(hi))
    rng = np.random.default_rng(0)
    draws = rng.normal(0.9, 0.02, (TRIALS, 3))
    held = np.mean([(e := over_seeds(d)).ci_low <= 0.9 <= e.ci_high for d in draws])
    assert 0.94 <= held <= 0.96
    one = over_seeds([0.93])
    assert one.mean == 0.93 and one.std == 0 and math.isnan(one.ci_low)


@pytest.mark.parametrize(("k", "n"), [(950, 1000), (199, 200), (200, 200), (0, 50), (17, 40)])
def test_wilson_interval_is_scipys(k: int, n: int) -> None:
    """The Wilson interval equals scipy's binomtest(...).proportion_ci(method='wilson')."""
    ref = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert wilson_interval(k / n, n) == (pytest.approx(ref.low), pytest.approx(ref.high))


def test_paired_comparison_is_a_paired_t_test_with_5_percent_false_alarms() -> None:
    """compare() over seeds is scipy's ttest_rel; with no true difference (seeds that move
    both variants alike) it calls 5 % of the differences significant, and it finds a real
    difference of three seed-to-seed spreads of the difference."""
    a, b = [0.91, 0.93, 0.88], [0.90, 0.91, 0.88]
    c = compare(a, b, names=("a", "b"))
    assert c.p_value == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert c.diff == pytest.approx(0.01) and c.ci_low < c.diff < c.ci_high and not c.significant
    rng = np.random.default_rng(1)
    chip = rng.normal(0.9, 0.03, (TRIALS, 5))  # the chip moves both variants
    noise = rng.normal(0, 0.005, (TRIALS, 2, 5))
    alarms = np.mean([compare(chip[i] + noise[i, 0], chip[i] + noise[i, 1]).significant
                      for i in range(TRIALS)])  # fmt: skip
    assert 0.04 <= alarms <= 0.06
    found = np.mean([compare(chip[i] + noise[i, 0] + 0.015, chip[i] + noise[i, 1]).significant
                     for i in range(500)])  # fmt: skip
    assert found > 0.9


def test_one_seed_falls_back_on_the_test_images() -> None:
    """With one seed the comparison is a two-proportion z-test over the test images: a gap
    of one image out of 200 is not significant, ten points are; without images, no test."""
    near = compare([0.950], [0.955], n_images=200)
    assert near.n == 1 and "test images" in near.test and not near.significant
    assert compare([0.95], [0.85], n_images=200).significant
    unknown = compare([0.95], [0.85])
    assert unknown.test == "one seed" and math.isnan(unknown.p_value) and not unknown.significant


def test_accuracy_uncertainty_and_comparison_to_the_best() -> None:
    """A summary's intervals: over seeds (none with one seed), Wilson on the test images,
    the loss paired seed by seed; the best variant first."""
    two = accuracy_uncertainty([[0.96, 0.94], [0.95, 0.92]], 200)
    assert len(two["accuracy_ci95"]) == 2 and two["accuracy_ci95"][0][0] < 0.955
    assert two["accuracy_wilson95"][0] == list(wilson_interval(0.955, 200))
    assert two["accuracy_loss_ci95"][0] < 0.025 < two["accuracy_loss_ci95"][1]
    one = accuracy_uncertainty([[0.96, 0.94]], 200)
    assert all(math.isnan(x) for x in one["accuracy_ci95"][0])
    ranked = compare_to_best({"x": [0.90, 0.91], "y": [0.95, 0.96], "z": [0.94, 0.96]})
    assert [(c.a, c.b) for c in ranked] == [("y", "y"), ("z", "y"), ("x", "y")]
    assert ranked[0].diff == 0 and not ranked[0].significant

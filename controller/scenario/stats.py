"""How sure a figure is: confidence intervals over device-noise seeds and over test images, and
whether two variants really differ.

Two sources of uncertainty make a measured accuracy move:

- **the chip**: programming noise, drift exponents and read noise differ from seed to seed.
  :func:`over_seeds` gives the mean over seeds and its 95 % confidence interval (Student's t
  with n - 1 degrees of freedom; none with one seed);
- **the test set**: n test images resolve an accuracy to 1/n, and a test set of n images
  estimates the accuracy on all images only to within a binomial interval.
  :func:`wilson_interval` is the 95 % Wilson score interval (Wilson 1927), good at accuracies
  near 100 % where the normal approximation is not.

Variants of a run share their device-noise seeds (chip seed k is the same for every variant)
and their test images, so two variants are compared **paired**, seed by seed
(:func:`compare`: a paired t-test over seeds). With one seed there is nothing to pair over:
the comparison falls back on the test images alone (a two-proportion z-test, which ignores
that the images are shared and so errs on the side of "not significant"). A difference with
p >= 0.05 is reported as not significant.

Everything here is deterministic (no resampling): a summary holding these figures stays
byte-identical for the same scenario and seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
ALPHA = 0.05


def _ok(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _finite(values: Sequence[float | None]) -> np.ndarray:
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    return a[np.isfinite(a)]


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its spread and 95 % confidence interval (NaN bounds with fewer
    than two seeds)."""

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def over_seeds(values: Sequence[float | None], level: float = LEVEL) -> Estimate:
    """Mean, sample std (ddof 1) and the t confidence interval of the mean of ``values``
    (one per seed; None and NaN are left out)."""
    from scipy import stats as sps  # here: the command line loads this module, not scipy

    a = _finite(values)
    n = int(a.size)
    if n == 0:
        return Estimate(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(a.mean())
    if n == 1:
        return Estimate(mean, 0.0, 1, math.nan, math.nan)
    std = float(a.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return Estimate(mean, std, n, mean - half, mean + half)


def wilson_interval(p: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` measured on ``n`` trials (test images)."""
    from scipy import stats as sps

    if n <= 0 or not math.isfinite(p):
        return math.nan, math.nan
    z = float(sps.norm.ppf(0.5 + level / 2))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Comparison:
    """``a`` minus ``b``: the mean difference, its 95 % CI, the p-value of the test named in
    ``test`` and whether the difference is significant (p < 0.05)."""

    a: str
    b: str
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    test: str
    n: int
    significant: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    a: Sequence[float | None], b: Sequence[float | None], *, names: tuple[str, str] = ("a", "b"),
    n_images: int | None = None, level: float = LEVEL, paired: bool = True,
) -> Comparison:  # fmt: skip
    """``a - b`` for two variants measured on the same seeds (``a[k]``, ``b[k]``: seed k):
    a paired t-test over the seeds both have; with one seed, a two-proportion z-test over
    ``n_images`` test images (accuracies only). ``paired=False`` (other seeds, e.g. sweep
    points with another scenario seed): Welch's t-test."""
    from scipy import stats as sps

    if not paired:
        return _welch(a, b, names, n_images, level)
    pairs = [(x, y) for x, y in zip(a, b, strict=False) if _ok(x) and _ok(y)]
    n = len(pairs)
    if n == 0:
        return Comparison(*names, math.nan, math.nan, math.nan, math.nan, "none", 0, False)
    d = np.asarray([x - y for x, y in pairs], dtype=np.float64)
    diff = float(d.mean())
    if n >= 2:
        sd = float(d.std(ddof=1))
        if sd == 0:  # every seed gives the same difference
            p = 1.0 if diff == 0 else 0.0
            return Comparison(*names, diff, diff, diff, p, "paired t-test over seeds", n, p < ALPHA)
        half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
        p = float(sps.ttest_rel([x for x, _ in pairs], [y for _, y in pairs]).pvalue)
        return Comparison(*names, diff, diff - half, diff + half, p, "paired t-test over seeds",
                          n, p < ALPHA)  # fmt: skip
    if not n_images:
        return Comparison(*names, diff, math.nan, math.nan, math.nan, "one seed", 1, False)
    pa, pb = pairs[0]
    se = math.sqrt(max(pa * (1 - pa) + pb * (1 - pb), 0.0) / n_images)
    z = float(sps.norm.ppf(0.5 + level / 2))
    p = (1.0 if diff == 0 else 0.0) if se == 0 else float(2 * sps.norm.sf(abs(diff) / se))
    return Comparison(*names, diff, diff - z * se, diff + z * se, p,
                      f"two-proportion z-test over {n_images} test images (one seed)", 1,
                      p < ALPHA)  # fmt: skip


def _welch(
    a: Sequence[float | None], b: Sequence[float | None], names: tuple[str, str],
    n_images: int | None, level: float,
) -> Comparison:  # fmt: skip
    from scipy import stats as sps

    xa, xb = _finite(a), _finite(b)
    if xa.size < 2 or xb.size < 2:  # too few seeds for a spread: the test images decide
        return compare(xa[:1].tolist(), xb[:1].tolist(), names=names, n_images=n_images)
    va, vb = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    diff = float(xa.mean() - xb.mean())
    if va + vb == 0:
        p = 1.0 if diff == 0 else 0.0
        return Comparison(*names, diff, diff, diff, p, "Welch t-test", int(xa.size), p < ALPHA)
    dof = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    half = float(sps.t.ppf(0.5 + level / 2, dof)) * math.sqrt(va + vb)
    p = float(sps.ttest_ind(xa, xb, equal_var=False).pvalue)
    return Comparison(*names, diff, diff - half, diff + half, p, "Welch t-test",
                      int(min(xa.size, xb.size)), p < ALPHA)  # fmt: skip


def accuracy_uncertainty(
    per_seed: Sequence[Sequence[float | None]], n_images: int | None
) -> dict[str, Any]:
    """What a summary adds to a variant's accuracies (``per_seed[k][i]``: seed k, evaluation
    i): per evaluation the 95 % CI of the mean over seeds and the Wilson interval of the
    mean on ``n_images`` test images; the same for the loss (first minus last evaluation,
    seed by seed; with one seed, from the test images alone)."""
    times = max((len(s) for s in per_seed), default=0)
    est = [over_seeds([s[i] if i < len(s) else None for s in per_seed]) for i in range(times)]
    out: dict[str, Any] = {  # an accuracy lies in [0, 1]: so do its bounds
        "accuracy_ci95": [
            [max(e.ci_low, 0.0), min(e.ci_high, 1.0)] if e.n > 1 else [math.nan, math.nan]
            for e in est
        ],  # fmt: skip
        "accuracy_wilson95": [list(wilson_interval(e.mean, n_images or 0)) for e in est],
    }
    if times:
        first = [s[0] for s in per_seed]
        last = [s[times - 1] if len(s) == times else None for s in per_seed]
        loss = compare(first, last, names=("first", "last"), n_images=n_images)
        out["accuracy_loss_ci95"] = [loss.ci_low, loss.ci_high]
    return out


def compare_to_best(
    variants: dict[str, Sequence[float | None]], n_images: int | None = None,
    paired: bool = True,
) -> list[Comparison]:  # fmt: skip
    """Each variant against the one with the highest mean (``variants``: name -> value per
    seed, e.g. the final accuracy), the best first (compared with itself)."""
    means = {k: over_seeds(v).mean for k, v in variants.items()}
    ranked = [k for k in sorted(means, key=lambda k: -means[k]) if math.isfinite(means[k])]
    if not ranked:
        return []
    best = ranked[0]
    return [compare(variants[k], variants[best], names=(k, best), n_images=n_images,
                    paired=paired) for k in ranked]  # fmt: skip

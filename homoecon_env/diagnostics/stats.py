"""Statistics with scipy: correlations, and confidence intervals over seeds.

- :func:`correlation` and :func:`spearman`: rank (or linear) correlation, nan where it says nothing;
- :func:`price_scarcity_correlation`: do relative prices follow scarcity (docs/design.md section 1)?
- :func:`mean_ci95` and :func:`paired_difference`: a metric's mean over seeds with its 95%
  Student t interval, and the same for the per-seed difference of two paired arms.

Pure functions, no module state. Shapes: N agents, R resources, T logged steps.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import scipy.stats

from homoecon_env.diagnostics.arrays import finite_float_array
from homoecon_env.diagnostics.metrics import relative_prices

__all__ = ["correlation", "spearman", "price_scarcity_correlation", "mean_ci95", "paired_difference"]

CONFIDENCE = 0.95  # level of every interval here


# --------------------------------------------------------------------------- correlation


def correlation(x: np.ndarray, y: np.ndarray, method: str = "spearman") -> float:
    """Spearman (ties share their average rank) or Pearson correlation of two finite 1-D arrays.

    nan where undefined: fewer than two pairs, or either side constant. Inputs are not checked
    beyond that (see :func:`spearman` for the checked version).
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method: expected 'spearman' or 'pearson', got {method!r}")
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    compute = scipy.stats.spearmanr if method == "spearman" else scipy.stats.pearsonr
    with warnings.catch_warnings():
        # Nearly constant data still has a correlation; scipy's warning about its precision is noise here.
        warnings.simplefilter("ignore", scipy.stats.NearConstantInputWarning)
        return float(compute(x, y).statistic)


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation of two 1-D samples of equal length (e.g. wealth and age over agents [N]).

    The Pearson correlation of the ranks, tied values sharing their average rank
    (``scipy.stats.spearmanr``). nan where it says nothing: either side constant, or fewer than three
    pairs (two distinct points are always perfectly rank-correlated). Raises ValueError on nan or
    inf, or unequal lengths.
    """
    first = finite_float_array(x, "x", ndim=1)
    second = finite_float_array(y, "y", ndim=1)
    if len(first) != len(second):
        raise ValueError(f"y: expected {len(first)} values like x, got {len(second)}")
    if len(first) < 3:
        return float("nan")
    return correlation(first, second, "spearman")


def _relative_scarcity(totals: np.ndarray) -> np.ndarray:
    """Relative scarcity [T, R]: (1 / total_r) / sum_q (1 / total_q); goods with none share 1."""
    missing = totals <= 0
    # (1 / t_r) scaled by the row's smallest positive total: in (0, 1], so a denormal total (a good
    # nearly gone) cannot overflow to inf and turn the row into nan; the normalisation cancels the scale
    smallest = np.where(missing, np.inf, totals).min(axis=1, keepdims=True)
    inverse = np.divide(smallest, totals, out=np.zeros_like(totals), where=~missing)
    any_missing = missing.any(axis=1, keepdims=True)
    weights = np.where(any_missing, missing.astype(np.float64), inverse)
    return weights / weights.sum(axis=1, keepdims=True)


def price_scarcity_correlation(
    prices_over_time: Any, totals_over_time: Any, *, method: str = "spearman"
) -> dict[str, Any]:
    """Do prices follow scarcity? Correlation of relative price with relative scarcity.

    ``prices_over_time``: [T, R] prices; ``totals_over_time``: [T, R] total holdings of each good.
    Relative price p_tr / sum_q p_tq; relative scarcity (1/total_tr) / sum_q (1/total_tq)
    (the inverse of a good's share, normalised; a good nobody holds is maximally scarce).
    ``method``: "spearman" (rank, ties averaged) or "pearson".

    Returns a dict: ``per_resource`` [R], the correlation over time of each good's relative
    price with its relative scarcity (with R = 2 both goods give the same number); ``mean``,
    their mean over goods where defined; ``pooled``, one correlation over all (t, r) pairs.
    A correlation is nan where undefined (a constant series, or T < 2): seasons must move
    supplies for this to be measurable.
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method: expected 'spearman' or 'pearson', got {method!r}")
    prices = relative_prices(finite_float_array(prices_over_time, "prices_over_time", ndim=2))
    totals = finite_float_array(totals_over_time, "totals_over_time", ndim=2)
    if totals.shape != prices.shape:
        raise ValueError(f"totals_over_time: expected shape {prices.shape} like prices, got {totals.shape}")
    if totals.size and totals.min() < 0:
        raise ValueError(f"totals_over_time: expected nonnegative, got min {totals.min()}")
    scarcity = _relative_scarcity(totals) if totals.size else totals
    per_resource = np.array([correlation(prices[:, r], scarcity[:, r], method) for r in range(prices.shape[1])])
    finite = per_resource[np.isfinite(per_resource)]
    return {
        "per_resource": per_resource,
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "pooled": correlation(prices.ravel(), scarcity.ravel(), method),
    }


# --------------------------------------------------------------------------- confidence intervals


def mean_ci95(samples: Any) -> tuple[float, float]:
    """Mean and 95% confidence half-width of 1-D samples (e.g. one metric over seeds).

    Half-width = t_{0.975, n-1} * s / sqrt(n), with s the sample standard deviation (ddof=1) and
    the Student t quantile from ``scipy.stats.t``. With one sample the half-width is inf (the
    interval is unbounded). Raises ValueError when there is no sample.
    """
    values = finite_float_array(samples, "samples", ndim=1)
    n = values.size
    if n == 0:
        raise ValueError("samples: expected at least one sample, got none")
    mean = float(values.mean())
    if n == 1:
        return mean, float("inf")
    quantile = float(scipy.stats.t.ppf(0.5 + CONFIDENCE / 2, df=n - 1))
    return mean, quantile * float(values.std(ddof=1)) / math.sqrt(n)


def paired_difference(first: Any, second: Any) -> tuple[float, float]:
    """Mean and 95% half-width of ``first - second``, paired by position (by seed), as :func:`mean_ci95`.

    The difference is significant at the 5% level (a two-sided paired t-test) exactly when
    ``abs(mean) > half-width``. Raises ValueError on unequal lengths.
    """
    a = finite_float_array(first, "first", ndim=1)
    b = finite_float_array(second, "second", ndim=1)
    if a.shape != b.shape:
        raise ValueError(f"second: expected {len(a)} paired values like first, got {len(b)}")
    return mean_ci95(a - b)

"""homoecon_env.diagnostics.stats: correlations and confidence intervals, against hand-worked values,
published t quantiles, NumPy and scipy's own t-test routines."""
import math

import numpy as np
import pytest
import scipy.stats

from homoecon_env.diagnostics import stats

# --------------------------------------------------------------------------- correlation


def test_spearman_hand_worked_with_ties():
    # Ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]; centred: [-1.5, 0, 0, 1.5] and [-1.5, .5, -.5, 1.5].
    # Pearson of the ranks = 4.5 / sqrt(4.5 * 5) = sqrt(0.9).
    assert stats.spearman([10.0, 20.0, 20.0, 30.0], [1.0, 7.0, 5.0, 9.0]) == pytest.approx(math.sqrt(0.9))
    assert stats.spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)  # monotone, not linear
    assert stats.spearman([1, 2, 3, 4], [8, 4, 2, 1]) == pytest.approx(-1.0)


def test_spearman_equals_pearson_of_argsort_ranks_without_ties():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=40), rng.normal(size=40)
    y = y + 0.5 * x
    ranks = lambda v: np.argsort(np.argsort(v)).astype(float)  # noqa: E731 (distinct values: ranks 0..n-1)
    assert stats.spearman(x, y) == pytest.approx(np.corrcoef(ranks(x), ranks(y))[0, 1], abs=1e-12)
    assert stats.spearman(np.exp(x), y**3 + y) == pytest.approx(stats.spearman(x, y), abs=1e-12)  # ranks only


def test_spearman_is_nan_where_undefined_and_refuses_bad_input():
    assert math.isnan(stats.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))  # a constant side
    assert math.isnan(stats.spearman([1.0, 2.0], [2.0, 1.0]))  # two points say nothing
    with pytest.raises(ValueError, match="x: contains nan"):
        stats.spearman([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="y: expected 3 values like x, got 2"):
        stats.spearman([1.0, 2.0, 3.0], [1.0, 2.0])


def test_pearson_hand_worked_and_nan_when_a_side_is_constant():
    # x centred [-1, 0, 1], y centred [-4/3, -1/3, 5/3]: r = 3 / sqrt(2 * 42/9) = 9 / sqrt(84).
    assert stats.correlation(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]), "pearson") == \
        pytest.approx(9 / math.sqrt(84))
    assert stats.correlation(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]), "spearman") == pytest.approx(1.0)
    assert math.isnan(stats.correlation(np.array([1.0, 2.0]), np.array([5.0, 5.0]), "pearson"))
    assert math.isnan(stats.correlation(np.array([1.0]), np.array([2.0]), "spearman"))
    with pytest.raises(ValueError, match="method: expected 'spearman' or 'pearson', got 'kendall'"):
        stats.correlation(np.ones(3), np.ones(3), "kendall")


def test_prices_following_scarcity_correlate_positively():
    # Berries abundant in even steps, meat in odd steps; the scarce good is dearer.
    totals = np.array([[10.0, 2.0], [2.0, 10.0], [6.0, 4.0], [3.0, 9.0], [8.0, 1.0]])
    prices = 1.0 / totals  # exactly inverse to abundance
    result = stats.price_scarcity_correlation(prices, totals)
    np.testing.assert_allclose(result["per_resource"], [1.0, 1.0])
    assert result["mean"] == pytest.approx(1.0) and result["pooled"] == pytest.approx(1.0)
    inverted = stats.price_scarcity_correlation(totals, totals, method="pearson")
    assert inverted["mean"] < -0.9


def test_a_good_nearly_gone_is_the_scarcest_not_nan():
    # 1 / 1e-320 overflows float64; the scarcity of a row is still (1/t_r) / sum_q (1/t_q): the
    # almost-gone good takes nearly all of it (by hand: the others get 1e-320 / (1 + 2e-320) ~ 1e-320)
    totals = np.array([[1e-320, 1.0, 1.0], [1.0, 2.0, 4.0], [3.0, 1e-320, 2.0], [1.0, 1.0, 1e-320]])
    prices = np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow, no nan
        result = stats.price_scarcity_correlation(prices, totals, method="pearson")
    assert np.all(np.isfinite(result["per_resource"]))
    np.testing.assert_allclose(stats._relative_scarcity(totals)[1], [4 / 7, 2 / 7, 1 / 7])
    np.testing.assert_allclose(stats._relative_scarcity(totals)[0], [1.0, 0.0, 0.0], atol=1e-300)


def test_price_scarcity_correlation_is_nan_for_constant_series():
    result = stats.price_scarcity_correlation(np.ones((4, 2)), np.ones((4, 2)))
    assert np.all(np.isnan(result["per_resource"])) and math.isnan(result["mean"])


# --------------------------------------------------------------------------- confidence intervals


def test_mean_ci95_of_known_samples():
    # mean 2, s = 1, t_{0.975, 2} = 4.302653 (published table) -> half-width 4.302653 / sqrt(3)
    mean, half = stats.mean_ci95([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0) and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    mean, half = stats.mean_ci95([5.0, 5.0])
    assert mean == 5.0 and half == 0.0
    assert stats.mean_ci95([4.0]) == (4.0, math.inf)
    with pytest.raises(ValueError, match="samples"):
        stats.mean_ci95([])


@pytest.mark.parametrize("df, quantile", [(30, 2.042272), (60, 2.000298), (120, 1.979930)])
def test_mean_ci95_uses_the_published_t_quantile_for_many_seeds(df, quantile):
    # -1 (df/2 times), 0, +1 (df/2 times): n = df + 1, mean 0, s^2 = df / df = 1.
    samples = [-1.0] * (df // 2) + [0.0] + [1.0] * (df // 2)
    mean, half = stats.mean_ci95(samples)
    assert mean == pytest.approx(0.0, abs=1e-15)
    assert half == pytest.approx(quantile / math.sqrt(df + 1), rel=1e-6)


def test_mean_ci95_agrees_with_scipy_one_sample_t_interval():
    samples = np.random.default_rng(2).gamma(2.0, 1.5, size=7)
    low, high = scipy.stats.ttest_1samp(samples, 0.0).confidence_interval(0.95)
    mean, half = stats.mean_ci95(samples)
    assert (mean - half, mean + half) == pytest.approx((low, high), rel=1e-12)


def test_paired_difference_is_significant_exactly_when_the_paired_t_test_rejects():
    rng = np.random.default_rng(3)
    verdicts = []
    for shift in np.linspace(0.0, 1.5, 16):
        first = rng.normal(size=6)
        second = first - shift + rng.normal(scale=0.8, size=6)
        mean, half = stats.paired_difference(first, second)
        significant = abs(mean) > half
        assert significant == (scipy.stats.ttest_rel(first, second).pvalue < 0.05)
        verdicts.append(significant)
    assert any(verdicts) and not all(verdicts)  # both outcomes were exercised
    with pytest.raises(ValueError, match="second: expected 3 paired values like first, got 2"):
        stats.paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])

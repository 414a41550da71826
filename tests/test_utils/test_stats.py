"""bhcl.utils.stats against scipy's tests, hand-computed values and a simulation."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from bhcl.utils.stats import paired_difference, paired_mde, paired_power, t_interval, welch_test


def test_t_interval_uses_the_t_quantile_at_every_size():
    out = t_interval([0.1, 0.2, 0.3])
    assert out['mean'] == pytest.approx(0.2) and out['sd'] == pytest.approx(0.1)
    assert out['half'] == pytest.approx(4.303 * 0.1 / math.sqrt(3), abs=1e-4)  # table value
    # 30 degrees of freedom: 2.042, not the normal 1.96
    x = np.arange(31, dtype=float)
    got = t_interval(x)
    assert got['half'] / (x.std(ddof=1) / math.sqrt(31)) == pytest.approx(2.042, abs=1e-3)
    assert (got['low'], got['high']) == pytest.approx((15 - got['half'], 15 + got['half']))
    assert math.isnan(t_interval([0.4])['half'])
    with pytest.raises(ValueError, match='non-finite'):
        t_interval([0.1, float('nan')])


def test_paired_difference_by_hand_and_against_scipy():
    a, b = [1.0, 2.0, 3.0, 4.0], [0.5, 2.5, 2.0, 3.0]
    out = paired_difference(a, b)   # differences 0.5, -0.5, 1, 1
    assert out['mean'] == pytest.approx(0.5)
    assert out['sd'] == pytest.approx(math.sqrt(0.5))
    assert out['half'] == pytest.approx(3.182446 * math.sqrt(0.5) / 2, rel=1e-6)
    ref = sps.ttest_rel(a, b)
    assert out['t'] == pytest.approx(ref.statistic) and out['p'] == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (out['low'], out['high']) == pytest.approx((ci.low, ci.high))
    with pytest.raises(ValueError, match='same seeds'):
        paired_difference([1, 2, 3], [1, 2])
    same = paired_difference([1, 2, 3], [0, 1, 2])   # a constant shift: certain
    assert same['half'] == 0 and same['p'] == 0


def test_pairing_removes_the_seed_effect_welch_does_not():
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 1.0, 12)
    a = seed_effect + 0.3 + rng.normal(0, 0.05, 12)
    b = seed_effect + rng.normal(0, 0.05, 12)
    assert paired_difference(a, b)['p'] < 1e-6
    assert welch_test(a, b)['p'] > 0.05


def test_welch_against_scipy():
    a, b = [0.31, 0.35, 0.29, 0.40, 0.33], [0.25, 0.27, 0.30, 0.22, 0.26, 0.24, 0.29]
    out = welch_test(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert out['t'] == pytest.approx(ref.statistic) and out['p'] == pytest.approx(ref.pvalue)
    assert out['df'] == pytest.approx(ref.df)
    ci = ref.confidence_interval(0.95)
    assert (out['low'], out['high']) == pytest.approx((ci.low, ci.high))
    assert out['diff'] == pytest.approx(np.mean(a) - np.mean(b))


def test_mde_has_the_asked_power_by_simulation():
    n, sd = 10, 0.02
    mde = paired_mde(n, sd)
    assert paired_power(mde, n, sd) == pytest.approx(0.8, abs=1e-9)
    # the normal-approximation formula is close but not equal
    approx = (sps.t.ppf(0.975, n - 1) + sps.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    assert mde == pytest.approx(approx, rel=0.05) and mde != pytest.approx(approx, rel=1e-4)
    rng = np.random.default_rng(1)
    d = rng.normal(mde, sd, size=(40000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    rate = np.mean(np.abs(t) > sps.t.ppf(0.975, n - 1))
    assert rate == pytest.approx(0.8, abs=0.01)   # 4 sd of the simulation is 0.008
    assert paired_mde(40, sd) < mde and paired_mde(n, 2 * sd) == pytest.approx(2 * mde)
    with pytest.raises(ValueError, match='alpha'):
        paired_mde(n, sd, alpha=0.9, power=0.8)


def test_mde_with_few_seeds_stays_finite():
    """df = 1 or 2: the noncentral t tail that scipy's cdf returns as NaN."""
    for n in (2, 3):
        mde = paired_mde(n, 0.0238)
        assert math.isfinite(mde) and paired_power(mde, n, 0.0238) == pytest.approx(0.8)
    assert paired_mde(2, 0.0238) > paired_mde(3, 0.0238) > paired_mde(4, 0.0238)

"""Small-sample statistics for comparing training arms over seeds.

Plain numpy + scipy (no mm* import). Conventions: ``a`` and ``b`` are 1-D
sequences of one metric per seed; a *paired* design gives every arm the same
seeds with common random numbers (same data order, crops and initial weights),
so ``a[i]`` and ``b[i]`` belong together and the comparison is on the
differences ``a[i] - b[i]``. Intervals are two-sided and use Student-t
quantiles from :func:`scipy.stats.t.ppf` at every sample size.
"""
import math
from typing import Dict, Sequence

import numpy as np
from scipy import optimize
from scipy import stats as sps


def _vector(values: Sequence[float], name: str, least: int = 1) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < least:
        raise ValueError(f'{name} needs at least {least} values, got {x.size}')
    if not np.isfinite(x).all():
        raise ValueError(f'{name} has non-finite values: {x.tolist()}')
    return x


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Dict[str, float]:
    """Mean, sample sd and the Student-t interval of the mean.

    Returns ``dict(n, mean, sd, half, low, high)``; with one value the sd and
    interval are NaN.
    """
    x = _vector(values, 'values')
    n, mean = x.size, float(x.mean())
    if n < 2:
        nan = float('nan')
        return dict(n=1, mean=mean, sd=nan, half=nan, low=nan, high=nan)
    sd = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return dict(n=n, mean=mean, sd=sd, half=half, low=mean - half, high=mean + half)


def paired_difference(a: Sequence[float], b: Sequence[float],
                      confidence: float = 0.95) -> Dict[str, float]:
    """Paired t analysis of ``a - b`` (same seeds, same order).

    Returns ``dict(n, mean, sd, half, low, high, t, p)``: mean difference, sd of
    the differences, its t interval and the two-sided p-value of "no difference".
    """
    x, y = _vector(a, 'a', 2), _vector(b, 'b', 2)
    if x.size != y.size:
        raise ValueError(f'paired samples need the same seeds: {x.size} vs {y.size} values')
    out = t_interval(x - y, confidence)
    se = out['sd'] / math.sqrt(out['n'])
    if se == 0:
        t = 0.0 if out['mean'] == 0 else math.copysign(math.inf, out['mean'])
    else:
        t = out['mean'] / se
    out.update(t=t, p=float(2 * sps.t.sf(abs(t), out['n'] - 1)))
    return out


def welch_test(a: Sequence[float], b: Sequence[float],
               confidence: float = 0.95) -> Dict[str, float]:
    """Welch's unequal-variance t test of ``mean(a) - mean(b)`` (independent runs).

    Returns ``dict(diff, se, df, t, p, low, high)`` with the Welch-Satterthwaite
    degrees of freedom and the two-sided p-value.
    """
    x, y = _vector(a, 'a', 2), _vector(b, 'b', 2)
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    diff, se = float(x.mean() - y.mean()), math.sqrt(va + vb)
    if se == 0:
        raise ValueError('both samples are constant: Welch\'s test is undefined')
    df = (va + vb) ** 2 / (va ** 2 / (x.size - 1) + vb ** 2 / (y.size - 1))
    t = diff / se
    half = float(sps.t.ppf(0.5 + confidence / 2, df)) * se
    return dict(diff=diff, se=se, df=float(df), t=t, p=float(2 * sps.t.sf(abs(t), df)),
                low=diff - half, high=diff + half)


def paired_power(effect: float, n: int, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test at level ``alpha`` to detect a true
    mean difference ``effect`` with ``n`` pairs whose differences have sd ``sd``
    (noncentral t)."""
    if n < 2 or sd <= 0:
        raise ValueError(f'need n >= 2 and sd > 0, got n={n}, sd={sd}')
    df, nc = n - 1, effect * math.sqrt(n) / sd
    crit = sps.t.ppf(1 - alpha / 2, df)
    # P(T > crit) + P(T < -crit); the second as sf(crit) at -nc, which scipy keeps
    # finite far in the tail where nct.cdf(-crit, nc) returns NaN
    return float(sps.nct.sf(crit, df, nc) + sps.nct.sf(crit, df, -nc))


def paired_mde(n: int, sd: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimal detectable effect of a paired design: the smallest true mean
    difference that the two-sided paired t test at level ``alpha`` detects with
    probability ``power``, given ``n`` seeds and the sd of the differences."""
    if not 0 < alpha < 1 or not alpha < power < 1:
        raise ValueError(f'need 0 < alpha < power < 1, got alpha={alpha}, power={power}')
    guess = (sps.t.ppf(1 - alpha / 2, n - 1) + sps.t.ppf(power, n - 1)) * sd / math.sqrt(n)
    return float(optimize.brentq(lambda d: paired_power(d, n, sd, alpha) - power,
                                 guess * 0.5, guess * 2.0, xtol=1e-12 * max(sd, 1e-300)))

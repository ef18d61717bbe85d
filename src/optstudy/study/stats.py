"""The report's statistics: intervals over seeds, Welch's t-test and Holm's correction."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

# Significance level of every test and 1 − the confidence of every interval of the report.
ALPHA = 0.05


def _values(values: Sequence[float] | pd.Series | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[~np.isnan(array)]


def interval(
    values: Sequence[float] | pd.Series | np.ndarray,
    confidence: float = 1 - ALPHA,
    prediction: bool = False,
) -> tuple[float, float]:
    """The Student-t interval of the mean of the non-NaN ``values`` at ``confidence``, or with
    ``prediction`` the interval where one more run of the same kind falls with that
    probability (half-width × √(1 + n)); (NaN, NaN) with fewer than two values."""
    array = _values(values)
    n = len(array)
    if n < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * array.std(ddof=1) / math.sqrt(n)
    if prediction:
        half *= math.sqrt(1 + n)
    mean = float(array.mean())
    return mean - half, mean + half


@dataclass(frozen=True)
class Difference:
    """mean(a) − mean(b), its Welch interval and the two-sided p-value of Welch's t-test."""

    difference: float
    low: float
    high: float
    p_value: float


def welch(
    a: Sequence[float] | pd.Series | np.ndarray,
    b: Sequence[float] | pd.Series | np.ndarray,
    confidence: float = 1 - ALPHA,
) -> Difference:
    """Welch's t-test of the non-NaN ``a`` against ``b`` and the interval of mean(a) − mean(b)
    at ``confidence``; interval and p NaN when a side has fewer than two values or both are
    constant (no spread to judge a difference by)."""
    a, b = _values(a), _values(b)
    difference = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return Difference(difference, math.nan, math.nan, math.nan)
    result = stats.ttest_ind(a, b, equal_var=False)
    bounds = result.confidence_interval(confidence_level=confidence)
    return Difference(difference, float(bounds.low), float(bounds.high), float(result.pvalue))


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values: with the m non-NaN p-values sorted, the i-th
    smallest (i from 0) becomes max over j ≤ i of min(1, (m − j)·p_(j)); NaN stays NaN and is
    not counted in m. Rejecting where the adjusted p < α controls the family-wise error."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    order = [i for i in np.argsort(p, kind="stable") if not np.isnan(p[i])]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted

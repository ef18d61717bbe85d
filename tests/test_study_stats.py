"""The report's statistics on fixed numbers, each against an independent computation:
Holm's correction (statsmodels and by hand), t-intervals and Welch's interval (statsmodels),
the performance profile on a hand-made three-optimizer, two-task example, and the expected
best-so-far of a tuning grid (every order enumerated)."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from optstudy.study.profile import performance_ratios, profile_scores, rho, time_costs
from optstudy.study.stats import holm, interval, welch
from optstudy.study.tuneability import best_so_far, budgets, expected_best, tuneability

P_VALUES = [0.01, 0.04, 0.03, 0.005, 0.2, 0.03, 0.9]


def test_holm_matches_statsmodels():
    expected = multipletests(P_VALUES, method="holm")[1]
    np.testing.assert_allclose(holm(P_VALUES), expected, rtol=1e-12)


def test_holm_by_hand_with_nan_not_counted():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): ×4, ×3, ×2, ×1, each at least the one before
    adjusted = holm([0.01, math.nan, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, math.nan, 0.06, 0.06, 0.02])
    assert np.isnan(holm([math.nan])).all() and holm([]).size == 0


VALUES = [0.90, 0.91, 0.925, 0.88]


def test_interval_of_the_mean_matches_statsmodels():
    assert interval(VALUES, 0.95) == pytest.approx(DescrStatsW(VALUES).tconfint_mean(0.05))
    assert interval(VALUES, 0.99) == pytest.approx(DescrStatsW(VALUES).tconfint_mean(0.01))
    assert all(math.isnan(v) for v in interval([0.9], 0.95))


def test_prediction_interval_by_hand():
    n, mean, sd = 4, np.mean(VALUES), np.std(VALUES, ddof=1)
    half = 3.182446305284263 * sd * math.sqrt(1 + 1 / n)  # t(0.975, 3) from tables
    assert interval(VALUES, 0.95, prediction=True) == pytest.approx((mean - half, mean + half))


def test_welch_interval_and_p_match_statsmodels():
    a, b = [0.90, 0.91, 0.925, 0.88], [0.86, 0.87, 0.90]
    result = welch(a, b, confidence=0.9)
    compare = CompareMeans(DescrStatsW(a), DescrStatsW(b))
    assert (result.low, result.high) == pytest.approx(
        compare.tconfint_diff(alpha=0.1, usevar="unequal")
    )
    assert result.p_value == pytest.approx(compare.ttest_ind(usevar="unequal")[1])
    assert result.difference == pytest.approx(np.mean(a) - np.mean(b))
    assert math.isnan(welch([0.9], b).p_value) and math.isnan(welch([1, 1], [1, 1]).p_value)


# Hand-made: steps to target of three optimizers on two tasks (inf: never reached).
COSTS = pd.DataFrame(
    {"a": [100.0, 300.0], "b": [200.0, 100.0], "c": [math.inf, 250.0]},
    index=pd.Index(["A", "B"], name="task"),
)
# Ratios: A: a 1, b 2, c r_max (never); B: a 3, b 1, c 2.5.
RATIOS = {"a": [1.0, 3.0], "b": [2.0, 1.0], "c": [4.0, 2.5]}


def test_performance_ratios_by_hand():
    ratios = performance_ratios(COSTS, r_max=4.0)
    for config, expected in RATIOS.items():
        assert ratios[config].tolist() == pytest.approx(expected)


def test_rho_by_hand():
    shares = rho(performance_ratios(COSTS, 4.0), np.array([1.0, 2.0, 2.5, 3.0, 3.99]))
    assert shares["a"].tolist() == [0.5, 0.5, 0.5, 1.0, 1.0]
    assert shares["b"].tolist() == [0.5, 1.0, 1.0, 1.0, 1.0]
    assert shares["c"].tolist() == [0.0, 0.0, 0.5, 0.5, 0.5]


def test_profile_score_is_the_area_under_rho():
    ratios = performance_ratios(COSTS, 4.0)
    scores = profile_scores(ratios, 4.0)
    # By hand: mean over tasks of (4 − r) / 3.
    assert scores.to_dict() == pytest.approx({"a": 4 / 6, "b": 5 / 6, "c": 1.5 / 6})
    assert scores.index.tolist() == ["b", "a", "c"]
    taus = np.linspace(1.0, 4.0, 30_001)[:-1]  # the step function, integrated numerically
    area = rho(ratios, taus).mean() * (4.0 - 1.0) / 3.0
    np.testing.assert_allclose(area[scores.index], scores, atol=1e-3)  # grid resolution


def test_a_configuration_missing_on_a_task_or_a_task_nobody_solved_gets_r_max():
    costs = COSTS.assign(d=[50.0, math.nan])
    ratios = performance_ratios(costs, 4.0)
    assert ratios.loc["A", "d"] == 1.0 and ratios.loc["B", "d"] == 4.0
    assert ratios.loc["A", "a"] == 2.0  # d is now the fastest on A
    nobody = performance_ratios(pd.DataFrame({"a": [math.inf], "b": [math.inf]}), 4.0)
    assert nobody.to_numpy().tolist() == [[4.0, 4.0]]


def test_time_costs_take_the_median_with_misses_as_infinite():
    runs = pd.DataFrame(
        {
            "task": ["A"] * 6,
            "configuration": ["x"] * 3 + ["y"] * 3,
            "status": ["completed", "completed", "completed", "completed", "diverged", "completed"],
            "steps_to_target": [100.0, 200.0, math.nan, 100.0, math.nan, math.nan],
        }
    )
    costs = time_costs(runs, "configuration", "steps_to_target")
    assert costs.loc["A", "x"] == 200.0  # median of 100, 200, ∞
    assert costs.loc["A", "y"] == math.inf  # median of 100, ∞ (diverged), ∞


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6])
def test_expected_best_is_the_mean_over_every_order(k):
    scores = [0.5, 0.9, 0.0, 0.9, 0.7]  # a diverged setting scores 0; a tie
    orders = list(itertools.permutations(scores))
    brute = np.mean([max(order[:k]) for order in orders])
    assert expected_best(scores, k) == pytest.approx(brute, rel=1e-12)


def test_best_so_far_and_budgets():
    assert [best_so_far([0.2, 0.8, 0.5], k) for k in (1, 2, 3, 9)] == [0.2, 0.8, 0.8, 0.8]
    assert budgets(3) == [1, 2, 3] and budgets(5) == [1, 2, 3, 4, 5]
    assert budgets(20) == [1, 2, 3, 4, 8, 16, 20]


def test_tuneability_of_a_grid_averages_orders_and_of_a_sampler_follows_its_trials():
    settings = pd.DataFrame(
        {
            "task": ["A"] * 4,
            "configuration": ["adam-constant"] * 4,
            "score": [0.5, 0.9, 0.0, 0.7],  # 0.0: a diverged setting
            "trained": [True, True, False, True],
            "trial": [3, 1, 0, 2],  # the sampler tried 0.0, 0.9, 0.7, then 0.5
        }
    )
    grid = tuneability(settings, "grid").iloc[0]
    assert (grid["tried"], grid["trained"], grid["trained_share"]) == (4, 3, 0.75)
    assert grid["after_1"] == pytest.approx(np.mean([0.5, 0.9, 0.0, 0.7]))
    assert grid["after_4"] == 0.9
    sampled = tuneability(settings, "tpe").iloc[0]
    assert [sampled[f"after_{k}"] for k in (1, 2, 3, 4)] == [0.0, 0.9, 0.9, 0.9]

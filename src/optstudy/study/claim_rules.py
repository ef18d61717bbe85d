"""The rules that decide a claim's verdict (:mod:`optstudy.study.claims`), each implemented
once and parameterised by the claim's YAML. A rule gets the completed runs the claim counts
(prepared, see ``aggregate.prepare_runs``), the study (histories, diagnostics) and its
parameters, and returns a :class:`Verdict`; it raises :class:`NotTested` when the runs lack
what it needs.

The tests of one claim are corrected together: its p-values by Holm, its intervals at
confidence 1 − α/m (Bonferroni) for its m units (tasks, configurations or reported values).
A claim is supported when every unit supports it and refuted when any unit refutes it.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from optstudy.artifacts import WHOLE_MODEL
from optstudy.study.aggregate import SELECTION_METRIC, summarize
from optstudy.study.collect import CONFIG_PREFIX, Study
from optstudy.study.compare import VERDICTS as RANKING
from optstudy.study.compare import compare_to_best
from optstudy.study.stats import ALPHA, holm, interval, welch

SUPPORTED, REFUTED, INCONCLUSIVE, NOT_TESTED = VERDICTS = (
    "supported",
    "refuted",
    "inconclusive",
    "not tested",
)
MORE_SEEDS = "more seeds (study.final.seeds, or seed=… of its sweep) to narrow the intervals"
RUN_THEM = "runs of the configurations not run yet (study.optimizers)"
TRAIN_LONGER = "a longer budget (trainer.max_epochs): the step shrank but learning had not stalled"


class NotTested(Exception):
    """The runs a claim needs are not among those collected."""


@dataclass(frozen=True)
class Unit:
    """One part of a claim's test (a task, a configuration, a reported value)."""

    verdict: str
    sentence: str
    row: Mapping[str, Any]
    settle: str = ""


@dataclass(frozen=True)
class Verdict:
    """A claim's verdict, the numbers behind it (in words and as rows) and the next step:
    what would settle it (inconclusive) or the command that would test it (not tested)."""

    verdict: str
    detail: str
    next_step: str = ""
    numbers: tuple[Mapping[str, Any], ...] = ()


def _configurations(
    runs: pd.DataFrame, include: Sequence[str], exclude: Sequence[str] = ()
) -> pd.DataFrame:
    """The runs whose ``configuration`` matches a shell pattern of ``include`` (``adam-*``)
    and none of ``exclude``."""

    def keep(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
            fnmatch.fnmatchcase(name, p) for p in exclude
        )

    return runs[runs["configuration"].map(keep)]


def _representative(runs: pd.DataFrame) -> str:
    """The configuration of ``runs`` with the best mean validation score (chosen on
    validation, never on the metric under test)."""
    return str(runs.groupby("configuration")[SELECTION_METRIC].mean().idxmax())


def _fmt(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.4g}"


def _span(low: float, high: float) -> str:
    return f"[{_fmt(low)}, {_fmt(high)}]"


def _alpha(params: Mapping[str, Any]) -> float:
    return float(params.get("alpha", ALPHA))


def _conclude(units: Sequence[Unit]) -> Verdict:
    """The claim's verdict from its units: refuted if any refutes it, supported if all
    support it, else inconclusive with what would settle it."""
    verdicts = [u.verdict for u in units]
    rows = tuple({**u.row, "verdict": u.verdict} for u in units)
    detail = " ".join(u.sentence for u in units)
    if REFUTED in verdicts:
        return Verdict(REFUTED, detail, numbers=rows)
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return Verdict(SUPPORTED, detail, numbers=rows)
    settle = "; ".join(dict.fromkeys(u.settle for u in units if u.verdict == INCONCLUSIVE))
    return Verdict(INCONCLUSIVE, detail, settle, rows)


def _step_ratios(runs: pd.DataFrame, study: Study) -> pd.Series:
    """Per run (index): the log of its last over its first measured whole-model effective step
    size (runs with fewer than two measured steps left out)."""
    rows = study.diagnostics[
        (study.diagnostics["layer"] == WHOLE_MODEL) & study.diagnostics["run"].isin(runs["run"])
    ]
    steps = rows.sort_values("step").groupby("run")["eff_step_median"]
    return np.log(steps.last() / steps.first())[steps.size() > 1]


def _last_improvement(study: Study, run_ids: pd.Series) -> pd.Series:
    """Per run: its last epoch's relative train-loss improvement (NaN with a single epoch)."""
    history = study.histories[study.histories["run"].isin(run_ids)].sort_values("epoch")

    def drop(loss: pd.Series) -> float:
        return (loss.iloc[-2] - loss.iloc[-1]) / abs(loss.iloc[-2]) if len(loss) > 1 else math.nan

    return history.groupby("run")["train_loss"].apply(drop)


def _trend_verdict(
    params: Mapping[str, Any], trend: str, improvement: pd.Series, confidence: float
) -> tuple[str, str]:
    """(verdict, what would settle it) of one configuration of :func:`step_size_trend`."""
    if trend == "unclear":
        return INCONCLUSIVE, MORE_SEEDS
    if params["expect"] == "holds":
        return (SUPPORTED if trend == "holds" else REFUTED), ""
    if trend == "holds":
        return REFUTED, ""
    if "stall" not in params:
        return SUPPORTED, ""
    low, high = interval(improvement, confidence)
    if high < params["stall"]:
        return SUPPORTED, ""
    return INCONCLUSIVE, TRAIN_LONGER if low >= params["stall"] else MORE_SEEDS


def step_size_trend(runs: pd.DataFrame, study: Study, params: Mapping[str, Any]) -> Verdict:
    """Whether the whole-model median effective step size (diagnostics.csv) of the
    ``optimizers`` configurations ``expect``\\ s: ``shrinks`` (its last over its first measured
    value is below ``ratio``, the interval of the geometric mean over seeds entirely so) or
    ``holds`` (entirely above); with ``stall`` (for shrinks), learning must also have stalled:
    the last epoch's relative train-loss improvement below ``stall``."""
    chosen = _configurations(runs, params["optimizers"])
    names = ", ".join(params["optimizers"])
    if chosen.empty:
        raise NotTested(f"no run of {names}")
    log_ratio = _step_ratios(chosen, study)
    if log_ratio.empty:
        raise NotTested(
            f"the runs of {names} measured no optimizer diagnostics (diagnostics.csv: "
            "callbacks.diagnostics on)"
        )
    chosen = chosen[chosen["run"].isin(log_ratio.index)]
    improvement = _last_improvement(study, chosen["run"])
    groups = chosen.groupby(["task", "configuration"], sort=True)
    confidence = 1 - _alpha(params) / groups.ngroups
    units = []
    for (task, config), group in groups:
        ratios = log_ratio[group["run"]]
        low, high = interval(ratios, confidence)
        limit = math.log(params["ratio"])
        trend = "shrinks" if high < limit else "holds" if low > limit else "unclear"
        verdict, settle = _trend_verdict(params, trend, improvement[group["run"]], confidence)
        row = {
            "task": task,
            "configuration": config,
            "seeds": len(group),
            "step_ratio": math.exp(ratios.mean()),
            "low": math.exp(low),
            "high": math.exp(high),
            "last_epoch_improvement": float(improvement[group["run"]].mean()),
        }
        sentence = (
            f"{task} {config}: last/first effective step {_fmt(row['step_ratio'])} "
            f"{_span(row['low'], row['high'])} over {len(group)} seeds ({trend} against "
            f"{params['ratio']:g}); last-epoch train-loss improvement "
            f"{_fmt(row['last_epoch_improvement'])}."
        )
        units.append(Unit(verdict, sentence, row, settle))
    missing = [p for p in params["optimizers"] if _configurations(runs, [p]).empty]
    if missing:
        units.append(Unit(INCONCLUSIVE, f"Not run: {', '.join(missing)}.", {}, RUN_THEM))
    return _conclude(units)


def _at_epoch(study: Study, runs: pd.DataFrame, column: str, epoch: int) -> pd.Series:
    """Per run (index): its history.csv ``column`` after ``epoch`` epochs (runs without it
    left out)."""
    history = study.histories[
        study.histories["run"].isin(runs["run"]) & (study.histories["epoch"] == epoch - 1)
    ]
    return history.set_index("run")[column].dropna()


def early_speed(runs: pd.DataFrame, study: Study, params: Mapping[str, Any]) -> Verdict:
    """Whether the ``optimizers`` configuration (the best of them by validation) is ahead of
    every other configuration of its task in history.csv's ``metric`` after ``epoch`` epochs
    (``higher_is_better``), by Welch's test Holm-corrected over all the claim's comparisons:
    supported if ahead of all beyond noise, refuted if one is ahead of it beyond noise."""
    column, epoch = params.get("metric", "val_acc"), int(params.get("epoch", 1))
    sign = 1.0 if params.get("higher_is_better", True) else -1.0
    values = _at_epoch(study, runs, column, epoch)
    runs = runs[runs["run"].isin(values.index)]
    tests = []
    for task, group in runs.groupby("task", sort=True):
        claimed_runs = _configurations(group, params["optimizers"])
        if claimed_runs.empty or claimed_runs["run"].nunique() == group["run"].nunique():
            continue
        claimed = _representative(claimed_runs)
        ours = values[group.loc[group["configuration"] == claimed, "run"]]
        others = group[~group["run"].isin(claimed_runs["run"])]
        for other, rows in others.groupby("configuration", sort=True):
            theirs = values[rows["run"]]
            tests.append((task, claimed, other, ours, theirs, welch(sign * ours, sign * theirs)))
    if not tests:
        raise NotTested(
            f"no task with runs of {', '.join(params['optimizers'])} and of another "
            f"configuration that recorded {column} after epoch {epoch}"
        )
    adjusted = holm([t[-1].p_value for t in tests])
    units = []
    for task in dict.fromkeys(t[0] for t in tests):
        mine = [(t, p) for t, p in zip(tests, adjusted, strict=True) if t[0] == task]
        units.append(_early_unit(task, mine, column, epoch, _alpha(params)))
    return _conclude(units)


def _early_unit(task: str, tests: list, column: str, epoch: int, alpha: float) -> Unit:
    """One task's unit of :func:`early_speed` from its (test, Holm p) pairs."""
    claimed, ours = tests[0][0][1], tests[0][0][3]
    behind = [(t, p) for t, p in tests if p < alpha and t[-1].difference < 0]
    ahead = [(t, p) for t, p in tests if p < alpha and t[-1].difference > 0]
    rival, rival_p = max(tests, key=lambda tp: tp[0][4].mean())
    row = {
        "task": task,
        "configuration": claimed,
        "value": float(ours.mean()),
        "fastest_other": rival[2],
        "other_value": float(rival[4].mean()),
        "p_holm": float(rival_p),
        "comparisons": len(tests),
    }
    sentence = (
        f"{task}: {claimed} {column} after epoch {epoch} {_fmt(row['value'])} vs the best "
        f"other, {rival[2]}, {_fmt(row['other_value'])} (Holm p {_fmt(rival_p)}); ahead beyond "
        f"noise of {len(ahead)} of {len(tests)}, behind beyond noise of {len(behind)}."
    )
    if behind:
        return Unit(REFUTED, sentence, row)
    if len(ahead) == len(tests):
        return Unit(SUPPORTED, sentence, row)
    return Unit(INCONCLUSIVE, sentence, row, MORE_SEEDS)


def difference(runs: pd.DataFrame, study: Study, params: Mapping[str, Any]) -> Verdict:
    """Whether, on every task, side ``a`` (configurations matching ``a`` and not ``a_exclude``;
    the best of them by validation) beats side ``b`` in ``metric`` by at least ``at_least``
    (negative: "as well as, within that margin"): supported if the interval of mean(a) −
    mean(b) lies above ``at_least``, refuted if below."""
    metric, at_least = params.get("metric", "test_acc"), float(params.get("at_least", 0.0))
    pairs = []
    for task, group in runs.groupby("task", sort=True):
        a = _configurations(group, params["a"], params.get("a_exclude", ()))
        b = _configurations(group, params["b"], params.get("b_exclude", ()))
        if not a.empty and not b.empty:
            pairs.append((task, group, _representative(a), _representative(b)))
    if not pairs:
        raise NotTested(
            f"no task with runs of both {', '.join(params['a'])} and {', '.join(params['b'])}"
        )
    confidence = 1 - _alpha(params) / len(pairs)
    units = []
    for task, group, a, b in pairs:
        of = group.groupby("configuration")[metric]
        d = welch(of.get_group(a), of.get_group(b), confidence)
        verdict = SUPPORTED if d.low > at_least else REFUTED if d.high < at_least else INCONCLUSIVE
        row = {
            "task": task,
            "a": a,
            "b": b,
            "difference": d.difference,
            "low": d.low,
            "high": d.high,
            "p_value": d.p_value,
        }
        sentence = (
            f"{task}: {a} − {b} {metric} {_fmt(d.difference)} {_span(d.low, d.high)} "
            f"({confidence:.1%} interval) against {at_least:+g}."
        )
        units.append(Unit(verdict, sentence, row, MORE_SEEDS))
    return _conclude(units)


def no_single_winner(runs: pd.DataFrame, study: Study, params: Mapping[str, Any]) -> Verdict:
    """Whether every configuration run on all tasks is worse beyond seed noise than the best
    on at least one task (the report's ranking: Welch, Holm within the task) in ``metric``:
    supported if so, refuted if one configuration is best on every task with every other
    worse beyond noise there, else inconclusive."""
    metric = params.get("metric", "test_acc")
    ranked = runs.assign(config=runs["configuration"], lr_group=runs["configuration"])
    sizes = ranked.groupby("task")["configuration"].nunique()
    ranked = ranked[ranked["task"].isin(sizes[sizes > 1].index)]
    if ranked["task"].nunique() < 2:
        raise NotTested("needs runs of two or more tasks, each with two or more configurations")
    table = compare_to_best(summarize(ranked), ranked, metric).pivot(
        index="config", columns="task", values="verdict"
    )
    everywhere = table.dropna()
    beaten = everywhere.eq(RANKING[2]).any(axis=1)
    winners = everywhere.index[everywhere.eq(RANKING[0]).all(axis=1)]
    clear = (
        len(winners) == 1
        and (table.drop(winners).isin([RANKING[2]]) | table.drop(winners).isna()).all().all()
    )
    rows = [
        {
            "task": task,
            "best": table.index[table[task] == RANKING[0]][0],
            "worse_beyond_noise": int((table[task] == RANKING[2]).sum()),
            "configurations": int(table[task].notna().sum()),
        }
        for task in table
    ]
    unbeaten = list(everywhere.index[~beaten])
    sentence = (
        "Best per task: "
        + ", ".join(f"{r['task']}: {r['best']}" for r in rows)
        + ". "
        + (
            f"Never worse beyond noise on any task: {', '.join(unbeaten)}."
            if unbeaten
            else f"Each of the {len(everywhere)} configurations run on every task is worse beyond "
            "noise than the best on at least one."
        )
    )
    if clear:
        return Verdict(REFUTED, sentence, numbers=tuple(rows))
    if not unbeaten:
        return Verdict(SUPPORTED, sentence, numbers=tuple(rows))
    return Verdict(INCONCLUSIVE, sentence, MORE_SEEDS + ", or more tasks", tuple(rows))


def where_runs(runs: pd.DataFrame, where: Mapping[str, Any]) -> pd.DataFrame:
    """The runs whose values (a prepared-runs column, else the config key ``cfg.<key>``)
    equal those of ``where`` (floats up to rounding)."""
    chosen = pd.Series(True, index=runs.index)
    for key, wanted in where.items():
        column = key if key in runs else CONFIG_PREFIX + key
        if column not in runs:
            return runs.iloc[0:0]
        values = runs[column]
        if isinstance(wanted, float):
            chosen &= values.map(
                lambda v, w=wanted: isinstance(v, int | float) and math.isclose(v, w)
            )
        else:
            chosen &= values == wanted
    return runs[chosen]


def reported_number(runs: pd.DataFrame, study: Study, params: Mapping[str, Any]) -> Verdict:
    """Whether each of ``values`` (``label``, ``select``: the values its runs have,
    ``reported``, optional ``metric``) lies in the interval of the measured ``metric`` over
    seeds: the prediction interval of one more run (``interval: prediction``, as a write-up
    reports one run) or the interval of the mean (``interval: mean``)."""
    prediction = params.get("interval", "prediction") == "prediction"
    measured = [(v, where_runs(runs, v["select"])) for v in params["values"]]
    tested = [(v, r) for v, r in measured if not r.empty]
    if not tested:
        raise NotTested("no run matches any of " + ", ".join(v["label"] for v in params["values"]))
    confidence = 1 - _alpha(params) / len(tested)
    units = []
    for value, chosen in tested:
        metric = value.get("metric", params.get("metric", "test_acc"))
        low, high = interval(chosen[metric], confidence, prediction)
        reported = float(value["reported"])
        verdict = (
            INCONCLUSIVE if math.isnan(low) else SUPPORTED if low <= reported <= high else REFUTED
        )
        row = {
            "label": value["label"],
            "metric": metric,
            "reported": reported,
            "measured": float(chosen[metric].mean()),
            "seeds": len(chosen),
            "low": low,
            "high": high,
        }
        sentence = (
            f"{value['label']}: reported {metric} {reported:g}, measured {_fmt(row['measured'])} "
            f"over {len(chosen)} seeds, {'one more run' if prediction else 'mean'} "
            f"{_span(low, high)} ({confidence:.1%})."
        )
        units.append(Unit(verdict, sentence, row, MORE_SEEDS))
    missing = [v["label"] for v, r in measured if r.empty]
    if missing:
        units.append(Unit(INCONCLUSIVE, f"Not measured: {', '.join(missing)}.", {}, RUN_THEM))
    return _conclude(units)


Rule = Callable[[pd.DataFrame, Study, Mapping[str, Any]], Verdict]
# Each rule by name, with the parameters its YAML must give.
RULES: dict[str, tuple[Rule, tuple[str, ...]]] = {
    "step_size_trend": (step_size_trend, ("optimizers", "expect", "ratio")),
    "early_speed": (early_speed, ("optimizers",)),
    "difference": (difference, ("a", "b")),
    "no_single_winner": (no_single_winner, ()),
    "reported_number": (reported_number, ("values",)),
}

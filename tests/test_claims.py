"""Each claim of conf/claims reaches each verdict it can (supported, refuted, inconclusive,
not tested) on small synthetic run directories, through the report's own loading."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from study_runs import Run, study_block, write_run

from optstudy.errors import ConfigError
from optstudy.study.aggregate import prepare_runs
from optstudy.study.claims import CLAIMS_DIR, evaluate, load_claims
from optstudy.study.collect import load_study
from optstudy.study.stats import interval

CLAIMS = {claim.name: claim for claim in load_claims(ROOT / CLAIMS_DIR)}
TASKS = {"t1": ("digits", "mlp"), "t2": ("digits", "cnn")}
BLOCK = study_block("syn", TASKS)
JITTER = (-0.004, 0.0, 0.004)  # seed-to-seed spread of the final seeds 1, 2, 3


def verdict(tmp_path: Path, claim: str, runs: list[tuple[str, Run]], phase: str | None = "final"):
    """Write ``runs`` ((task, run) pairs; task None: a plain sweep's run) and evaluate
    ``claim`` on them as the report does."""
    for number, (task, run) in enumerate(runs):
        run.job = number
        folder = tmp_path / "runs" / (task or "plain")
        write_run(folder, run, BLOCK if task else None, task, phase if task else None)
    study = load_study([tmp_path / "runs"])
    return evaluate(CLAIMS[claim], prepare_runs(study), study)


def seeds(optimizer: str, task: str = "t1", test: float = 0.9, **fields) -> list[tuple[str, Run]]:
    """Final runs of ``optimizer`` on ``task`` for seeds 1-3 around ``test``."""
    data, model = TASKS[task]
    fields.setdefault("val_accs", [0.5, 0.8, 0.9])
    return [
        (task, Run(optimizer, 0.01, seed, test_acc=test + jitter, data=data, model=model,
                   **{k: (v(jitter) if callable(v) else v) for k, v in fields.items()}))
        for seed, jitter in zip((1, 2, 3), JITTER, strict=True)
    ]  # fmt: skip


def test_every_claim_file_loads_with_its_rule():
    assert set(CLAIMS) == {
        "adagrad_step_shrinks", "rmsprop_adadelta_no_collapse", "adam_fastest_early",
        "sgd_generalises", "no_single_winner", "adamw_beats_adam_l2", "e1_reported_accuracy",
        "e2_reported_accuracy",
    }  # fmt: skip
    assert {c.rule for c in CLAIMS.values()} == {
        "step_size_trend", "early_speed", "difference", "no_single_winner", "reported_number"
    }  # fmt: skip


def test_a_claim_file_without_its_rules_parameter_is_one_error(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        "text: t\nsource: s\nstudy: default\ncommand: c\nrule: {name: difference, a: [x-*]}\n"
    )
    with pytest.raises(ConfigError, match=r"bad.yaml: rule difference needs rule.b"):
        load_claims(tmp_path)


def _shrinking(factor: float, losses: list[float]) -> dict:
    return {
        "eff_steps": lambda j: [1.0, factor**0.5, factor + j],
        "train_losses": losses,
        "val_accs": [0.5, 0.8, 0.9],
    }


@pytest.mark.parametrize(
    ("fields", "expected", "settle"),
    [
        (_shrinking(0.1, [1.0, 0.5, 0.499]), "supported", ""),
        (_shrinking(1.2, [1.0, 0.5, 0.499]), "refuted", ""),
        (_shrinking(0.1, [1.0, 0.6, 0.3]), "inconclusive", "trainer.max_epochs"),
        ({"eff_steps": lambda j: [1.0, 0.5, 0.5 + 60 * j]}, "inconclusive", "more seeds"),
    ],
    ids=["shrinks-and-stalls", "grows", "shrinks-still-learning", "noisy"],
)
def test_adagrad_step_shrinks(tmp_path, fields, expected, settle):
    result = verdict(tmp_path, "adagrad_step_shrinks", seeds("adagrad", **fields))
    assert result.verdict == expected, result.detail
    assert settle in result.next_step
    (row,) = result.numbers
    ratios = [r[-1] / r[0] for r in (fields["eff_steps"](j) for j in JITTER)]
    assert row["step_ratio"] == pytest.approx(math.exp(np.mean(np.log(ratios))))


def test_adagrad_step_shrinks_not_tested_without_adagrad_or_diagnostics(tmp_path):
    result = verdict(tmp_path / "a", "adagrad_step_shrinks", seeds("adam"))
    assert result.verdict == "not tested" and "no run of adagrad-*" in result.detail
    assert result.next_step == "python -m optstudy.study run study=default"
    result = verdict(tmp_path / "b", "adagrad_step_shrinks", seeds("adagrad"))
    assert result.verdict == "not tested" and "measured no optimizer diagnostics" in result.detail


@pytest.mark.parametrize(
    ("rmsprop", "expected"), [(0.9, "supported"), (0.1, "refuted")], ids=["holds", "collapses"]
)
def test_rmsprop_adadelta_no_collapse(tmp_path, rmsprop, expected):
    runs = seeds("rmsprop", eff_steps=lambda j: [1.0, rmsprop + j])
    runs += seeds("adadelta", eff_steps=lambda j: [1.0, 1.5 + j])
    result = verdict(tmp_path, "rmsprop_adadelta_no_collapse", runs)
    assert result.verdict == expected, result.detail
    assert [r["configuration"] for r in result.numbers] == ["adadelta-constant", "rmsprop-constant"]


def test_rmsprop_without_adadelta_is_inconclusive(tmp_path):
    runs = seeds("rmsprop", eff_steps=lambda j: [1.0, 0.9 + j])
    result = verdict(tmp_path, "rmsprop_adadelta_no_collapse", runs)
    assert result.verdict == "inconclusive" and "Not run: adadelta-*." in result.detail
    assert result.numbers[0]["verdict"] == "supported"


def _early(adam: float, sgd: float, spread: float = 1.0) -> list:
    return [
        *seeds("adam", val_accs=lambda j: [adam + spread * j, 0.9]),
        *seeds("momentum", val_accs=lambda j: [0.5 + spread * j, 0.95]),
        *seeds("sgd", val_accs=lambda j: [sgd + spread * j, 0.85]),
    ]


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        (_early(0.8, 0.4), "supported"),
        (_early(0.7, 0.9), "refuted"),
        (_early(0.52, 0.4, spread=5.0), "inconclusive"),
    ],
    ids=["ahead-of-all", "sgd-ahead", "within-noise"],
)
def test_adam_fastest_early(tmp_path, runs, expected):
    result = verdict(tmp_path, "adam_fastest_early", runs)
    assert result.verdict == expected, result.detail
    assert result.numbers[0]["comparisons"] == 2


def test_adam_fastest_early_not_tested_in_the_defaults_phase(tmp_path):
    result = verdict(tmp_path, "adam_fastest_early", _early(0.8, 0.4), phase="defaults")
    assert result.verdict == "not tested" and "no completed run of phase final" in result.detail


def _generalises(momentum: float, spread: float = 1.0) -> list:
    return [
        *seeds("momentum", test=momentum, val_accs=lambda j: [0.5, 0.95 + j]),
        *seeds("sgd", test=0.99, val_accs=[0.5, 0.99]),  # sgd-constant: excluded however good
        *seeds("adam", test=0.9, val_accs=lambda j: [0.5, 0.9 + spread * j]),
    ]


@pytest.mark.parametrize(
    ("momentum", "expected"),
    [(0.91, "supported"), (0.8, "refuted"), (0.898, "inconclusive")],
    ids=["better", "worse", "close"],
)
def test_sgd_generalises(tmp_path, momentum, expected):
    result = verdict(tmp_path, "sgd_generalises", _generalises(momentum))
    assert result.verdict == expected, result.detail
    (row,) = result.numbers
    assert (row["a"], row["b"]) == ("momentum-constant", "adam-constant")
    assert row["difference"] == pytest.approx(momentum - 0.9)


def test_adamw_beats_adam_l2(tmp_path):
    runs = seeds("adamw", test=0.92) + seeds("adam_l2", test=0.9)
    assert verdict(tmp_path / "a", "adamw_beats_adam_l2", runs).verdict == "supported"
    result = verdict(tmp_path / "b", "adamw_beats_adam_l2", seeds("adamw") + seeds("adam"))
    assert result.verdict == "not tested"
    assert result.next_step.endswith("'study.optimizers=[adam_l2,adamw]'")


@pytest.mark.parametrize(
    ("tests", "expected"),
    [
        ({"t1": (0.95, 0.9, 0.8), "t2": (0.9, 0.95, 0.8)}, "supported"),
        ({"t1": (0.9, 0.95, 0.8), "t2": (0.9, 0.95, 0.8)}, "refuted"),
        ({"t1": (0.95, 0.9, 0.8), "t2": (0.95, 0.951, 0.8)}, "inconclusive"),
    ],
    ids=["each-task-its-winner", "adam-everywhere", "momentum-never-beaten"],
)
def test_no_single_winner(tmp_path, tests, expected):
    runs = []
    for task, values in tests.items():
        for optimizer, test in zip(("momentum", "adam", "sgd"), values, strict=True):
            runs += seeds(optimizer, task=task, test=test)
    result = verdict(tmp_path, "no_single_winner", runs)
    assert result.verdict == expected, result.detail


def test_no_single_winner_needs_two_tasks(tmp_path):
    result = verdict(tmp_path, "no_single_winner", seeds("adam") + seeds("sgd", test=0.8))
    assert result.verdict == "not tested" and "two or more tasks" in result.detail


def _e2(values: dict[str, list[float]], max_epochs: int = 200) -> list:
    """E2's plain-sweep runs: each optimizer's test accuracies, one run a seed."""
    return [
        (None, Run(optimizer, 0.001, seed, [0.5, 0.8], test_acc=test, data="cifar10",
                   model="lenet5", augment="e2", config={"trainer": {"max_epochs": max_epochs}}))
        for optimizer, tests in values.items()
        for seed, test in enumerate(tests)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"sgd": [0.85, 0.86, 0.87], "adagrad": [0.86, 0.87, 0.875]}, "supported"),
        ({"sgd": [0.55, 0.56, 0.57], "adagrad": [0.86, 0.87, 0.875]}, "refuted"),
        ({"sgd": [0.86], "adagrad": [0.86, 0.87, 0.875]}, "inconclusive"),
    ],
    ids=["near", "sgd-far", "one-seed"],
)
def test_e2_reported_accuracy(tmp_path, values, expected):
    result = verdict(tmp_path, "e2_reported_accuracy", _e2(values))
    assert result.verdict == expected, result.detail
    sgd, adagrad = result.numbers
    assert (sgd["label"], sgd["reported"], adagrad["reported"]) == ("SGD (fixed lr)", 0.857, 0.869)
    # Two values (m = 2): 97.5% prediction intervals of one more run.
    assert (sgd["low"], sgd["high"]) == pytest.approx(
        interval(values["sgd"], 0.975, prediction=True), nan_ok=True
    )


def test_e2_with_a_value_not_measured_is_inconclusive(tmp_path):
    result = verdict(tmp_path, "e2_reported_accuracy", _e2({"sgd": [0.85, 0.86, 0.87]}))
    assert result.verdict == "inconclusive" and "Not measured: AdaGrad." in result.detail
    assert result.numbers[0]["verdict"] == "supported"


def test_e2_not_tested_on_a_short_cifar10_run(tmp_path):
    result = verdict(tmp_path, "e2_reported_accuracy", _e2({"sgd": [0.5, 0.6]}, max_epochs=3))
    assert result.verdict == "not tested" and "trainer.max_epochs=200" in result.detail
    assert result.next_step.startswith("python train.py -m study=e2")

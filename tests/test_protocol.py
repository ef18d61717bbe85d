"""The tuned study protocol as data: its checks, the runs each phase implies, and selection on
validation only."""

import json

import pandas as pd
import pytest
import yaml

from optstudy.errors import ConfigError
from optstudy.study.collect import Study
from optstudy.study.protocol import (
    defaults_jobs,
    final_jobs,
    grid_settings,
    load_protocol,
    log_grid,
    restrict,
    tuning_jobs,
)
from optstudy.study.select import read_selected, select_settings, write_selection

SPEC = {
    "name": "demo",
    "tasks": {
        "a": {"data": "digits", "model": "mlp"},
        "b": {"data": "digits", "model": "cnn_2c2d", "overrides": ["trainer.max_epochs=2"]},
    },
    "optimizers": ["sgd", "adam"],
    "schedulers": ["constant"],
    "tuning": {"method": "grid", "points_per_decade": 1, "seeds": [0], "metric": "best_val_acc"},
    "final": {"seeds": [1, 2]},
}  # fmt: skip
SPACES = {"sgd": {"lr": {"low": 1e-3, "high": 1.0, "log": True}},
          "adam": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}}  # fmt: skip


def test_log_grid_has_its_points_per_decade():
    assert log_grid(1e-3, 1.0, 1) == [0.001, 0.01, 0.1, 1.0]
    assert log_grid(1e-4, 1e-2, 2) == [0.0001, 0.0003162, 0.001, 0.003162, 0.01]
    assert grid_settings({"lr": {"low": 0.1, "high": 0.3, "log": False}}, 2) == [
        {"lr": 0.1}, {"lr": 0.2}, {"lr": 0.3}
    ]  # fmt: skip


def test_phases_imply_their_runs():
    protocol = load_protocol(SPEC)
    tune = list(tuning_jobs(protocol, SPACES))
    assert len(tune) == 2 * (4 + 3)  # tasks × (sgd's 4 lrs + adam's 3)
    assert {job.seed for job in tune} == {0} and {job.phase for job in tune} == {"tune"}
    defaults = list(defaults_jobs(protocol))
    assert len(defaults) == 2 * 2 * 2 and all(job.setting == {} for job in defaults)
    assert {job.seed for job in defaults} == {1, 2}
    job = tune[0]
    assert job.overrides() == [
        "study.task=a", "study.phase=tune", "data=digits", "model=mlp",
        "optimizer=sgd", "scheduler=constant", "optimizer.lr=0.001", "seed=0",
    ]  # fmt: skip
    task_b = next(j for j in tune if j.task.name == "b")
    assert "trainer.max_epochs=2" in task_b.overrides()
    selected = {"sgd-constant": {"a": {"lr": 0.1}, "b": {"lr": 0.01}}}
    final = list(final_jobs(protocol, selected))  # adam has no selection: no final run
    assert [(j.task.name, j.seed, j.setting) for j in final] == [
        ("a", 1, {"lr": 0.1}), ("a", 2, {"lr": 0.1}), ("b", 1, {"lr": 0.01}), ("b", 2, {"lr": 0.01})
    ]  # fmt: skip
    assert restrict(protocol, ["adam"], None).optimizers == ("adam",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"final": {"seeds": [0, 1]}}, "share [0]: final runs need fresh seeds"),
        ({"tuning": {**SPEC["tuning"], "metric": "test_acc"}}, "selection uses validation only"),
        ({"tuning": {**SPEC["tuning"], "method": "bayes"}}, "study.tuning.method=bayes is invalid"),
        ({"tasks": {}}, "study.tasks is empty"),
        ({"final": {"seeds": []}}, "study.final.seeds=[] is invalid"),
    ],
)
def test_a_bad_protocol_is_one_clear_error(change, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_protocol({**SPEC, **change})


def _runs(rows):
    frame = pd.DataFrame(rows)
    frame["cfg.optimizer.lr"] = frame.pop("lr")
    frame["phase"] = "tune"
    frame["scheduler"] = "constant"
    return Study(runs=frame, histories=pd.DataFrame(), diagnostics=pd.DataFrame())


def test_selection_uses_validation_never_test(tmp_path):
    """Built so that validation and test disagree: the lr with the best validation wins."""
    rows = [
        {"study_task": "a", "optimizer": "sgd", "lr": 0.01, "seed": 0, "status": "completed",
         "best_val_acc": 0.80, "test_acc": 0.95},
        {"study_task": "a", "optimizer": "sgd", "lr": 0.1, "seed": 0, "status": "completed",
         "best_val_acc": 0.90, "test_acc": 0.70},
        {"study_task": "a", "optimizer": "sgd", "lr": 1.0, "seed": 0, "status": "diverged",
         "best_val_acc": 0.99, "test_acc": None},  # diverged: scores 0 whatever it logged
    ]  # fmt: skip
    chosen = select_settings(_runs(rows), load_protocol(SPEC), SPACES)
    entry = chosen["sgd-constant"]["a"]
    assert entry == {"setting": {"lr": 0.1}, "score": 0.9, "tried": 3, "diverged": 1}
    write_selection(chosen, tmp_path)
    assert read_selected(tmp_path / "selected.yaml") == {"sgd-constant": {"a": {"lr": 0.1}}}
    assert json.loads((tmp_path / "selection.json").read_text()) == chosen
    assert (
        yaml.safe_load((tmp_path / "selected.yaml").read_text())["sgd-constant"]["a"]["lr"] == 0.1
    )


def test_selection_averages_the_tuning_seeds():
    rows = [
        {"study_task": "a", "optimizer": "adam", "lr": lr, "seed": seed, "status": "completed",
         "best_val_acc": acc, "test_acc": 0.5}
        for lr, seed, acc in [(1e-3, 0, 0.9), (1e-3, 1, 0.5), (1e-2, 0, 0.8), (1e-2, 1, 0.8)]
    ]  # fmt: skip
    chosen = select_settings(_runs(rows), load_protocol(SPEC), SPACES)
    assert chosen["adam-constant"]["a"]["setting"] == {"lr": 0.01}  # mean 0.8 beats mean 0.7

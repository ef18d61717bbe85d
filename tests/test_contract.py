"""The entry point and the run-directory contract: light to import, one list of keys that do
not change an experiment (used by resume and report alike), metrics.json from every run."""

import shutil
import subprocess
import sys
from dataclasses import fields

import pandas as pd
import pytest
import yaml
from conftest import CONF, ROOT, run_train
from test_train_data_sets import train_in_process

from optstudy.artifacts import (
    CONFIG_FILE,
    HISTORY_COLUMNS,
    METRIC_FIELDS,
    METRICS_FILE,
    RunMetrics,
    is_experiment_key,
    read_metrics,
)
from optstudy.errors import ConfigError
from optstudy.study.aggregate import prepare_runs, summarize
from optstudy.study.collect import load_study

DIGITS = ["data=digits", "model=mlp", "trainer=cpu", "trainer.max_epochs=1"]
CALLBACKS = yaml.safe_load((CONF / "callbacks" / "default.yaml").read_text())


# optstudy.rundir and optstudy.joblog: Hydra loads them (callbacks, the job log) in every command.
@pytest.mark.parametrize(
    "module", ["optstudy.cli", "optstudy.artifacts", "optstudy.rundir", "optstudy.joblog"]
)
def test_entry_point_and_contract_import_without_torch(module):
    heavy = "('torch', 'pytorch_lightning', 'lightning')"
    check = f"import sys, {module}; print([m for m in sys.modules if m.split('.')[0] in {heavy}])"
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]"


def test_metric_fields_are_fields_of_the_metrics_record():
    assert set(METRIC_FIELDS) <= {f.name for f in fields(RunMetrics)}


@pytest.mark.parametrize(
    ("key", "experiment"),
    [
        ("optimizer.lr", True),
        ("trainer.max_epochs", True),
        ("callbacks.early_stopping.patience", True),  # changes when a run stops
        ("data.root", False),
        ("data.source.search_dirs", False),
        ("callbacks.progress_bar.refresh_rate", False),
        ("paths.output_dir", False),
        ("data.rootx", True),  # a prefix matches whole keys only
    ],
)
def test_keys_that_change_an_experiment(key, experiment):
    assert is_experiment_key(key) == experiment


def test_every_callback_set_to_null_still_gives_complete_metrics(tmp_path, cache_dir):
    off = [f"callbacks.{name}=null" for name in CALLBACKS]
    metrics = train_in_process([*DIGITS, *off], tmp_path / "run", cache_dir)
    assert metrics == read_metrics(tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["epochs"] == 1
    assert 0.0 < metrics["best_val_acc"] == metrics["final_val_acc"] <= 1.0
    assert metrics["final_train_loss"] > 0 and metrics["train_time_s"] > 0
    assert not (tmp_path / "run" / "history.csv").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def without_time(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "train_time_s"}


def test_history_off_gives_the_metrics_of_history_on(tmp_path, cache_dir):
    on = train_in_process(DIGITS, tmp_path / "on", cache_dir)
    off = train_in_process([*DIGITS, "callbacks.history=null"], tmp_path / "off", cache_dir)
    timeless = {k: v for k, v in on.items() if k != "train_time_s"}
    assert {k: v for k, v in off.items() if k != "train_time_s"} == timeless
    history = pd.read_csv(tmp_path / "on" / "history.csv")
    assert tuple(history.columns) == HISTORY_COLUMNS
    assert history["val_acc"].iloc[-1] == on["final_val_acc"]


def test_a_run_may_be_continued_for_more_epochs(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    first = train_in_process(DIGITS, run_dir, cache_dir)
    longer = train_in_process([*DIGITS, "trainer.max_epochs=2"], run_dir, cache_dir)
    assert (first["epochs"], longer["epochs"]) == (1, 2)
    assert longer["steps"] == 2 * first["steps"]
    straight = train_in_process([*DIGITS, "trainer.max_epochs=2"], tmp_path / "straight", cache_dir)
    # The continued run computes what a 2-epoch run computes (same batches, same RNG states).
    assert longer["final_val_acc"] == straight["final_val_acc"]
    assert longer["final_train_loss"] == pytest.approx(straight["final_train_loss"], rel=1e-6)
    continued, fresh = (pd.read_csv(tmp_path / d / "history.csv") for d in ("run", "straight"))
    columns = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    pd.testing.assert_frame_equal(continued[columns], fresh[columns], rtol=1e-6)


def test_a_changed_optimizer_setting_is_refused(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    train_in_process(DIGITS, run_dir, cache_dir)
    written = (run_dir / METRICS_FILE).read_text()
    with pytest.raises(ConfigError, match="belongs to a run with another config"):
        train_in_process([*DIGITS, "optimizer.lr=0.01"], run_dir, cache_dir)
    assert (run_dir / METRICS_FILE).read_text() == written


def test_report_groups_runs_that_differ_only_in_where_the_data_is(tmp_path, cache_dir):
    assert run_train(DIGITS, tmp_path / "a", cache_dir).returncode == 0
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    config = yaml.safe_load((tmp_path / "b" / CONFIG_FILE).read_text())
    config["data"]["root"] = "/somewhere/else"
    config["data"]["cache_dir"] = "/another/cache"
    config["seed"] = 1
    (tmp_path / "b" / CONFIG_FILE).write_text(yaml.safe_dump(config))
    summary = summarize(prepare_runs(load_study([tmp_path])))
    assert len(summary) == 1 and summary["runs"].iloc[0] == 2
    assert summary["task"].iloc[0] == "digits/mlp"


def test_a_schedule_that_follows_the_epoch_count_still_resumes(tmp_path, cache_dir):
    """cosine's T_max interpolates trainer.max_epochs, the key a run may be continued under."""
    cosine = [*DIGITS, "scheduler=cosine"]
    first = train_in_process(cosine, tmp_path / "run", cache_dir)
    again = train_in_process(cosine, tmp_path / "run", cache_dir)  # finished: trains nothing
    assert without_time(again) == without_time(first)

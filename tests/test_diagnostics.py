"""``diagnostics.csv`` and the logged diagnostics of real runs (digits, MLP)."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import read_metrics, run_train

from optstudy.artifacts import DIAGNOSTICS_COLUMNS as COLUMNS

RUN = ["data=digits", "model=mlp", "optimizer=adagrad", "trainer.max_epochs=2"]
LAYERS = ["all", "net.1", "net.3"]  # the MLP's two Linear layers, after the whole model


@pytest.fixture(scope="module")
def adagrad_run(tmp_path_factory, cache_dir):
    """Two AdaGrad epochs (20 steps each), measured every 3 steps."""
    run_dir = tmp_path_factory.mktemp("diagnostics") / "run"
    result = run_train([*RUN, "callbacks.diagnostics.interval=3"], run_dir, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def _rows(run_dir):
    return pd.read_csv(run_dir / "diagnostics.csv")


def test_rows_every_interval_steps_per_layer(adagrad_run):
    rows = _rows(adagrad_run)
    assert tuple(rows.columns) == COLUMNS
    steps = read_metrics(adagrad_run)["steps"]
    assert steps == 40
    assert rows["step"].unique().tolist() == list(range(0, steps, 3))
    assert rows.groupby("step")["layer"].agg(list).map(LAYERS.__eq__).all()
    assert (
        rows.query("step == 21")["epoch"].eq(1).all()
        and rows.query("step == 18")["epoch"].eq(0).all()
    )
    assert np.isfinite(rows.drop(columns="layer").to_numpy()).all()


def test_values_are_consistent(adagrad_run):
    rows = _rows(adagrad_run)
    assert (rows.query("step == 0")["distance_from_init"] == 0).all()
    assert (rows.query("step > 0")["distance_from_init"] > 0).all()
    np.testing.assert_allclose(rows["update_ratio"], rows["update_norm"] / rows["param_norm"])
    whole = rows[rows["layer"] == "all"].set_index("step")
    layers = rows[rows["layer"] != "all"]
    for column in ("grad_norm", "param_norm", "update_norm", "distance_from_init"):
        squares = (layers[column] ** 2).groupby(layers["step"]).sum()
        np.testing.assert_allclose(whole[column], np.sqrt(squares), rtol=1e-6)
    assert (whole["eff_step_p10"] <= whole["eff_step_median"]).all()
    assert (whole["eff_step_median"] <= whole["eff_step_p90"]).all()


def test_adagrad_effective_step_only_shrinks(adagrad_run):
    """G only grows, so every AdaGrad step size, and so every percentile, never rises."""
    rows = _rows(adagrad_run)
    for layer in LAYERS:
        curve = rows[rows["layer"] == layer]
        for column in ("eff_step_p10", "eff_step_median", "eff_step_p90"):
            assert curve[column].is_monotonic_decreasing, (layer, column)
        assert curve["eff_step_median"].iloc[-1] < 0.5 * curve["eff_step_median"].iloc[0]


def test_the_whole_model_row_goes_to_the_logger(adagrad_run):
    logged = pd.read_csv(adagrad_run / "csv" / "metrics.csv")
    logged = logged.dropna(subset=["diagnostics/eff_step_median"]).set_index("step")
    whole = _rows(adagrad_run).query("layer == 'all'").set_index("step")
    assert logged.index.tolist() == whole.index.tolist()
    for column in COLUMNS[3:]:
        np.testing.assert_allclose(logged[f"diagnostics/{column}"], whole[column], rtol=1e-6)


def test_diagnostics_change_nothing_in_training(tmp_path, cache_dir, adagrad_run):
    """Measuring every step, or not at all, trains exactly as measuring every 3 steps."""
    every, off = tmp_path / "every", tmp_path / "off"
    assert run_train([*RUN, "callbacks.diagnostics.interval=1"], every, cache_dir).returncode == 0
    assert run_train([*RUN, "callbacks.diagnostics=null"], off, cache_dir).returncode == 0
    assert len(_rows(every)) == 40 * len(LAYERS) and not (off / "diagnostics.csv").exists()
    expected = {k: v for k, v in read_metrics(adagrad_run).items() if k != "train_time_s"}
    for run_dir in (every, off):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert {k: v for k, v in metrics.items() if k != "train_time_s"} == expected

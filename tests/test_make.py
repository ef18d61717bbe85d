"""The Makefile's study targets, run by make in a copy of the project (they write results/
where they run): ``make study-smoke`` (``make study STUDY=smoke``) runs the tuned smoke study
and writes its report."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, read_metrics

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.fixture
def venv(tmp_path) -> Path:
    """A stand-in for the Makefile's .venv: its python is this test's, and it counts as
    installed (nothing is installed again)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    (venv / ".installed").touch()
    return venv


@pytest.mark.slow  # make, a project copy and four processes: minutes on 2 busy cores
def test_make_study_smoke_runs_the_tuned_study_and_writes_its_report(tmp_path, venv):
    """The smoke study narrowed by ARGS (as the README says: they go to every phase) to one
    task, SGD and Adam, one final seed, one epoch: tune → select → final → report, as make
    study-smoke runs it (python -m optstudy.study run study=smoke)."""
    if not DEBIAN_FASHION_MNIST.exists():  # make's data step would apt-get install it
        if os.environ.get("CI"):
            pytest.fail("CI must provide Fashion-MNIST: apt-get install dataset-fashion-mnist")
        pytest.skip("make data would install the Debian package dataset-fashion-mnist")
    project = copy_project(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if k not in ("OPTSTUDY_ROOT", "MAKEFLAGS")}
    narrow = "study.optimizers=[sgd,adam] ~study.tasks.digits_cnn study.defaults=false"
    space = "optimizer.search_space.lr.low=0.01 optimizer.search_space.lr.high=0.1"
    args = f"ARGS={narrow} {space} study.final.seeds=[1] trainer.max_epochs=1"
    result = subprocess.run(
        ["make", "study-smoke", f"VENV={venv}", args],
        cwd=project, capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    results = project / "results" / "smoke"
    tuned = [read_metrics(p.parent) for p in (results / "tune").glob("digits_mlp/*/metrics.json")]
    for optimizer in ("sgd", "adam"):  # the log grid of the narrowed range, one point a decade
        lrs = sorted(m["lr"] for m in tuned if m["optimizer"] == optimizer)
        assert lrs == pytest.approx([0.01, 0.1]), optimizer
    assert {(m["seed"], m["epochs"], m["status"]) for m in tuned} == {(0, 1, "completed")}
    selected = yaml.safe_load((results / "selected.yaml").read_text())
    assert sorted(selected) == ["adam-constant", "sgd-constant"]
    final = [read_metrics(p.parent) for p in (results / "final").glob("digits_mlp/*/metrics.json")]
    assert sorted((m["optimizer"], m["seed"]) for m in final) == [("adam", 1), ("sgd", 1)]
    for m in final:
        assert m["lr"] == selected[f"{m['optimizer']}-constant"]["digits_mlp"]["lr"]
        tried = {t["lr"]: t["best_val_acc"] for t in tuned if t["optimizer"] == m["optimizer"]}
        assert tried[m["lr"]] == max(tried.values())  # the best on validation
    summary = json.loads((results / "report" / "summary.json").read_text())
    ranked = summary["final"]["digits_mlp"]
    assert sorted(ranked) == ["adam-constant", "sgd-constant"]
    for config, entry in ranked.items():
        (run,) = [m for m in final if f"{m['optimizer']}-constant" == config]
        assert (entry["seeds"], entry["mean"]) == (1, pytest.approx(run["test_acc"]))
    assert (results / "report" / "report.html").stat().st_size > 0

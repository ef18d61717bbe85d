"""The Makefile's study targets, run by make in a copy of the project (they write results/ and
reports/ where they run): ``make study-smoke`` trains the smoke study and writes its report."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
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


def test_make_study_smoke_trains_the_study_and_writes_its_report(tmp_path, venv):
    """Two of the smoke study's runs (ARGS narrows its sweep, as the README says), then the
    report: what make study-smoke does, in under a minute."""
    if not DEBIAN_FASHION_MNIST.exists():  # make's data step would apt-get install it
        if os.environ.get("CI"):
            pytest.fail("CI must provide Fashion-MNIST: apt-get install dataset-fashion-mnist")
        pytest.skip("make data would install the Debian package dataset-fashion-mnist")
    project = copy_project(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if k not in ("OPTSTUDY_ROOT", "MAKEFLAGS")}
    args = "ARGS=seed=0 optimizer=sgd,adam trainer.max_epochs=2"
    result = subprocess.run(
        ["make", "study-smoke", f"VENV={venv}", args],
        cwd=project, capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    jobs = sorted(p for p in (project / "results" / "smoke").iterdir() if p.is_dir())
    assert [job.name for job in jobs] == ["0-sgd-s0", "1-adam-s0"]
    for job in jobs:
        metrics = read_metrics(job)
        assert (metrics["status"], metrics["data"], metrics["epochs"]) == ("completed", "digits", 2)
    summary = pd.read_csv(project / "reports" / "smoke" / "summary.csv")
    assert sorted(summary["optimizer"]) == ["adam", "sgd"] and (summary["seeds"] == 1).all()
    assert (project / "reports" / "smoke" / "report.html").stat().st_size > 0

"""The DVC pipeline, for real, on the smoke study in a throw-away git repository."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import copy_project

DVC = str(Path(sys.executable).with_name("dvc"))
# The pipeline says `python`: this environment's, as after `source .venv/bin/activate`.
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "DVC_NO_ANALYTICS": "1",
}
SMOKE_RUNS = [f"{o}-constant-{s}" for o in ("sgd", "momentum", "adam") for s in (0, 1, 2)]


def _run(cmd: list[str], repo: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**ENV, "OPTSTUDY_ROOT": str(repo)}
    result = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, fashion_mnist_dir) -> Path:
    """A git repository holding the project's files, its pipeline switched to the smoke study,
    its data/ filled by the documented fetch step; then one full ``dvc repro``."""
    repo = copy_project(tmp_path_factory.mktemp("project"))
    pipeline = repo / "dvc.yaml"
    pipeline.write_text(
        pipeline.read_text().replace("conf/study/default.yaml", "conf/study/smoke.yaml")
    )
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "project"]):
        _run(cmd, repo)
    _run([sys.executable, "-m", "optstudy.data.fetch", "data=fashion_mnist"], repo)
    repo.joinpath("first_repro.txt").write_text(_run([DVC, "repro"], repo).stdout)
    _run(["git", "add", "-A"], repo)  # the study's dvc.lock: what metrics diff compares with
    _run(["git", "commit", "-qm", "first repro"], repo)
    return repo


def test_fetched_data_is_the_version_data_dvc_records(repo):
    assert "up to date" in _run([DVC, "status", "data.dvc"], repo).stdout


def test_repro_runs_every_stage(repo):
    output = repo.joinpath("first_repro.txt").read_text()
    assert _stages_run(output) == {"prepare", "compare", *(f"train@{r}" for r in SMOKE_RUNS)}
    for run in SMOKE_RUNS:
        metrics = json.loads((repo / "results" / "runs" / run / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["data"] == "digits"
    summary = json.loads((repo / "results" / "report" / "summary.json").read_text())
    assert sorted(summary) == [
        "digits/mlp/adam lr=0.001",
        "digits/mlp/momentum lr=0.01",
        "digits/mlp/sgd lr=0.01",
    ]
    assert all(entry["seeds"] == 3 for entry in summary.values())


def test_status_is_clean_and_a_second_repro_runs_nothing(repo):
    assert "Data and pipelines are up to date" in _run([DVC, "status"], repo).stdout
    assert _stages_run(_run([DVC, "repro"], repo).stdout) == set()


def test_metrics_and_plots_show(repo):
    shown = _run([DVC, "metrics", "show", "--json"], repo).stdout
    assert "best_val_acc_mean" in shown and "sgd-constant-0/metrics.json" in shown
    _run([DVC, "plots", "show", "-o", "plots_html"], repo)
    page = (repo / "plots_html" / "index.html").read_text()
    assert "learning_curves.png" in page and "history.csv" in page


def test_changing_one_configuration_reruns_only_its_runs_and_compare(repo):
    config = repo / "conf" / "optimizer" / "adam.yaml"
    config.write_text(config.read_text().replace("lr: 0.001 ", "lr: 0.002 "))
    ran = _stages_run(_run([DVC, "repro"], repo).stdout)
    assert ran == {
        "train@adam-constant-0",
        "train@adam-constant-1",
        "train@adam-constant-2",
        "compare",
    }
    assert (
        json.loads((repo / "results/runs/adam-constant-0/metrics.json").read_text())["lr"] == 0.002
    )


def test_metrics_and_plots_diff_show_what_the_change_changed(repo):
    """After the Adam lr change above, against the commit of the first repro: the Adam runs'
    metrics and histories and the summary differ, the other runs' not at all."""
    diff = json.loads(_run([DVC, "metrics", "diff", "--json"], repo).stdout)
    adam = [f"results/runs/adam-constant-{seed}/metrics.json" for seed in range(3)]
    assert sorted(diff) == sorted([*adam, "results/report/summary.json"])
    for path in adam:
        assert (diff[path]["lr"]["old"], diff[path]["lr"]["new"]) == (0.001, 0.002)
    plots = json.loads(_run([DVC, "plots", "diff", "--json"], repo).stdout)["data"]
    for run in SMOKE_RUNS:
        (plot,) = plots[f"results/runs/{run}/history.csv"]
        assert plot["revisions"] == ["workspace", "HEAD"]
        values = {rev: [] for rev in plot["revisions"]}
        for point in plot["content"]["data"]["values"]:
            values[point["rev"]].append(float(point["val_acc"]))
        assert len(values["HEAD"]) == 5  # one point per epoch of the smoke study
        assert (values["HEAD"] != values["workspace"]) == run.startswith("adam"), run


def _locked_with(repo: Path, stage: str, dep: Path) -> bool:
    """Whether dvc.lock records ``stage`` as run with the current content of ``dep``."""
    try:
        lock = yaml.safe_load((repo / "dvc.lock").read_text()) or {}
    except (FileNotFoundError, yaml.YAMLError):
        return False  # DVC rewrites the file in place: caught half-written, read it again
    md5 = hashlib.md5(dep.read_bytes()).hexdigest()
    deps = lock.get("stages", {}).get(stage, {}).get("deps", [])
    return any(d["path"] == str(dep.relative_to(repo)) and d["md5"] == md5 for d in deps)


def test_a_killed_repro_finishes_without_redoing_completed_runs(repo):
    config = repo / "conf" / "optimizer" / "adam.yaml"
    config.write_text(config.read_text().replace("lr: 0.002 ", "lr: 0.003 "))
    env = {**ENV, "OPTSTUDY_ROOT": str(repo)}
    proc = subprocess.Popen(
        [DVC, "repro"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    first = repo / "results/runs/adam-constant-0/metrics.json"
    deadline = time.time() + 300
    while not (first.exists() and json.loads(first.read_text())["lr"] == 0.003):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    while not _locked_with(repo, "train@adam-constant-0", config):  # DVC recorded the stage
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = first.stat().st_mtime_ns
    ran = _stages_run(_run([DVC, "repro"], repo).stdout)
    assert "train@adam-constant-0" not in ran and "compare" in ran
    assert first.stat().st_mtime_ns == done
    assert "Data and pipelines are up to date" in _run([DVC, "status"], repo).stdout

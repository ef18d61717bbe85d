"""The DVC pipeline, for real, on the smoke study in a throw-away git repository."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

DVC = str(Path(sys.executable).with_name("dvc"))
# The pipeline says `python`: this environment's, as after `source .venv/bin/activate`.
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "DVC_NO_ANALYTICS": "1",
}
# One stage per optimizer × schedule of the smoke study; its three seeds train as one group.
SMOKE_GROUPS = [f"{o}-constant" for o in ("sgd", "momentum", "adam")]
SMOKE_RUNS = [f"{g}/{s}-{g}-s{s}" for g in SMOKE_GROUPS for s in (0, 1, 2)]


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
    repo = tmp_path_factory.mktemp("project")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    pipeline = repo / "dvc.yaml"
    pipeline.write_text(
        pipeline.read_text().replace("conf/study/default.yaml", "conf/study/smoke.yaml")
    )
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "project"]):
        _run(cmd, repo)
    _run([sys.executable, "-m", "optstudy.data.fetch", "data=fashion_mnist"], repo)
    repo.joinpath("first_repro.txt").write_text(_run([DVC, "repro"], repo).stdout)
    return repo


def test_fetched_data_is_the_version_data_dvc_records(repo):
    assert "up to date" in _run([DVC, "status", "data.dvc"], repo).stdout


def test_repro_runs_every_stage(repo):
    output = repo.joinpath("first_repro.txt").read_text()
    assert _stages_run(output) == {"prepare", "compare", *(f"train@{g}" for g in SMOKE_GROUPS)}
    for run in SMOKE_RUNS:
        metrics = json.loads((repo / "results" / "runs" / run / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["data"] == "digits"
        assert metrics["group"]["size"] == 3 and metrics["group"]["mode"] == "sequential"
    metrics = sorted((repo / "results" / "report" / "metrics").iterdir())
    assert [p.name for p in metrics] == [
        "digits_mlp_adam_lr_0.001.json",
        "digits_mlp_momentum_lr_0.01.json",
        "digits_mlp_sgd_lr_0.01.json",
    ]
    assert all(json.loads(p.read_text())["seeds"] == 3 for p in metrics)


def test_status_is_clean_and_a_second_repro_runs_nothing(repo):
    assert "Data and pipelines are up to date" in _run([DVC, "status"], repo).stdout
    assert _stages_run(_run([DVC, "repro"], repo).stdout) == set()


def test_metrics_and_plots_show(repo):
    shown = json.loads(_run([DVC, "metrics", "show", "--json"], repo).stdout)
    sgd = shown["workspace"]["data"]["results/report/metrics/digits_mlp_sgd_lr_0.01.json"]
    assert sgd["data"]["seeds"] == 3 and 0 < sgd["data"]["best_val_acc"] <= 1
    table = _run([DVC, "metrics", "show"], repo).stdout.splitlines()
    assert len(table) == 1 + 3  # a header, then one row per configuration
    assert max(map(len, table)) <= 100  # as wide as a terminal, however many configurations
    _run([DVC, "plots", "show", "-o", "plots_html"], repo)
    page = (repo / "plots_html" / "index.html").read_text()
    assert "learning_curves.png" in page and "optimizer_diagnostics.png" in page


def test_changing_one_configuration_reruns_only_its_group_and_compare(repo):
    config = repo / "conf" / "optimizer" / "adam.yaml"
    config.write_text(config.read_text().replace("lr: 0.001 ", "lr: 0.002 "))
    ran = _stages_run(_run([DVC, "repro"], repo).stdout)
    assert ran == {"train@adam-constant", "compare"}
    for seed in (0, 1, 2):
        run = repo / f"results/runs/adam-constant/{seed}-adam-constant-s{seed}"
        assert json.loads((run / "metrics.json").read_text())["lr"] == 0.002


def _locked_with(repo: Path, stage: str, dep: Path) -> bool:
    """Whether dvc.lock records ``stage`` as run with the current content of ``dep``."""
    try:
        lock = yaml.safe_load((repo / "dvc.lock").read_text()) or {}
    except (FileNotFoundError, yaml.YAMLError):
        return False  # DVC rewrites the file in place: caught half-written, read it again
    md5 = hashlib.md5(dep.read_bytes()).hexdigest()
    deps = lock.get("stages", {}).get(stage, {}).get("deps", [])
    return any(d["path"] == str(dep.relative_to(repo)) and d["md5"] == md5 for d in deps)


def test_a_killed_repro_finishes_without_redoing_completed_groups(repo):
    config = repo / "conf" / "optimizer" / "adam.yaml"
    config.write_text(config.read_text().replace("lr: 0.002 ", "lr: 0.003 "))
    env = {**ENV, "OPTSTUDY_ROOT": str(repo)}
    proc = subprocess.Popen(
        [DVC, "repro"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    first = repo / "results/runs/adam-constant/2-adam-constant-s2/metrics.json"
    deadline = time.time() + 300
    while not (first.exists() and json.loads(first.read_text())["lr"] == 0.003):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    while not _locked_with(repo, "train@adam-constant", config):  # DVC recorded the stage
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = first.stat().st_mtime_ns
    ran = _stages_run(_run([DVC, "repro"], repo).stdout)
    assert "train@adam-constant" not in ran and "compare" in ran
    assert first.stat().st_mtime_ns == done
    assert "Data and pipelines are up to date" in _run([DVC, "status"], repo).stdout

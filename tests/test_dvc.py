"""The DVC pipeline of a tuned study, for real, on the smoke study in a throw-away git
repository: prepare → tune → select → final → report."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
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
# One tune and one final stage per optimizer × schedule of the smoke study.
SMOKE_CONFIGS = [f"{o}-constant" for o in ("sgd", "adam")]
SMOKE_TASKS = ("digits_mlp", "digits_cnn")
RESULTS = Path("results/smoke")


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


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_repro_runs_every_stage(repo):
    output = repo.joinpath("first_repro.txt").read_text()
    stages = {f"{phase}@{c}" for phase in ("tune", "final") for c in SMOKE_CONFIGS}
    assert _stages_run(output) == {"prepare", "select", "report", *stages}
    for config in SMOKE_CONFIGS:
        for task in SMOKE_TASKS:
            tuned = list((repo / RESULTS / "tune" / config / task).glob("*/metrics.json"))
            final = list((repo / RESULTS / "final" / config / task).glob("*/metrics.json"))
            seeds = {_metrics(p.parent)["seed"] for p in tuned}
            assert len(final) == 2 and {_metrics(p.parent)["seed"] for p in final} == {1, 2}
            assert seeds == {0, 1, 2} and len(tuned) >= 5  # the lr grid on seed 0, defaults on 1, 2
            assert all(_metrics(p.parent)["group"]["mode"] == "sequential" for p in final)
    selected = yaml.safe_load((repo / RESULTS / "selected.yaml").read_text())
    assert sorted(selected) == sorted(SMOKE_CONFIGS)
    assert all(sorted(tasks) == sorted(SMOKE_TASKS) for tasks in selected.values())
    for config, tasks in selected.items():
        for task, setting in tasks.items():
            final = next((repo / RESULTS / "final" / config / task).glob("*/metrics.json"))
            assert _metrics(final.parent)["lr"] == setting["lr"]
    assert (repo / RESULTS / "report" / "report.html").is_file()


def test_status_is_clean_and_a_second_repro_runs_nothing(repo):
    assert "Data and pipelines are up to date" in _run([DVC, "status"], repo).stdout
    assert _stages_run(_run([DVC, "repro"], repo).stdout) == set()


def test_metrics_and_plots_show(repo):
    # One revision: "" (DVC names the workspace "workspace" only next to other revisions).
    (shown,) = json.loads(_run([DVC, "metrics", "show", "--json"], repo).stdout).values()
    data = shown["data"]
    files = [f"{task}_{config}.json" for task in SMOKE_TASKS for config in SMOKE_CONFIGS]
    report = sorted(f"{RESULTS}/report/metrics/{name}" for name in files)
    assert sorted(data) == sorted([*report, f"{RESULTS}/selection.json"])
    final = json.loads((repo / RESULTS / "report" / "summary.json").read_text())["final"]
    for task in SMOKE_TASKS:
        for config in SMOKE_CONFIGS:
            shown_numbers = data[f"{RESULTS}/report/metrics/{task}_{config}.json"]["data"]
            ranked = final[task][config]
            assert shown_numbers == {
                "seeds": 2, "test_acc": ranked["mean"], "rank": ranked["rank"]
            }  # fmt: skip
    # The report's metrics (selection.json, the select stage's, is one wide row of its own).
    table = _run([DVC, "metrics", "show", f"{RESULTS}/report/metrics"], repo).stdout
    table = table.splitlines()
    assert len(table) == 1 + len(files)  # a header, then one row per task and configuration
    assert max(map(len, table)) <= 100  # as wide as a terminal, however many configurations
    selection = data[f"{RESULTS}/selection.json"]["data"]
    assert selection["adam-constant"]["digits_mlp"]["tried"] >= 3
    _run([DVC, "plots", "show", "-o", "plots_html"], repo)
    assert "lr_sensitivity.png" in (repo / "plots_html" / "index.html").read_text()


def test_changing_one_optimizer_reruns_only_its_stages_select_and_report(repo):
    config = repo / "conf" / "optimizer" / "adam.yaml"
    # ε 1e-2 instead of 1e-8: Adam's steps shrink, its results change (for the diff below).
    config.write_text(config.read_text().replace("eps: 1.0e-08", "eps: 1.0e-02"))
    ran = _stages_run(_run([DVC, "repro"], repo).stdout)
    assert ran == {"tune@adam-constant", "select", "final@adam-constant", "report"}
    run = next((repo / RESULTS / "final" / "adam-constant" / "digits_mlp").glob("*/.hydra"))
    assert "eps: 0.01" in (run / "config.yaml").read_text()


def test_metrics_and_plots_diff_show_what_the_change_changed(repo):
    """After the Adam change above, against the commit of the first repro (its dvc.lock; the
    files themselves come from DVC's cache): Adam's test accuracies differ, the other
    optimizers' (not rerun) keep theirs, and both revisions of each plot are there and differ."""
    diff = json.loads(_run([DVC, "metrics", "diff", "--json"], repo).stdout)
    report = RESULTS / "report" / "metrics"
    moved = {path for path, keys in diff.items() if "test_acc" in keys}
    adam = {f"{report}/{task}_adam-constant.json" for task in SMOKE_TASKS}
    assert moved == adam, moved  # the others' ranks may move, not their accuracies
    for path in adam:
        change = diff[path]["test_acc"]
        assert change["old"] is not None and change["old"] != change["new"]
    shown = json.loads(_run([DVC, "plots", "diff", "--json", "-o", "diff_html"], repo).stdout)
    for name in ("learning_curves-1.png", "lr_sensitivity.png"):
        images = {i["revisions"][0]: i["url"] for i in shown["data"][f"{RESULTS}/report/{name}"]}
        assert sorted(images) == ["HEAD", "workspace"], name
        head, workspace = ((repo / images[rev]).read_bytes() for rev in ("HEAD", "workspace"))
        assert head != workspace and head.startswith(b"\x89PNG"), name


def _locked_with(repo: Path, stage: str, dep: Path) -> bool:
    """Whether dvc.lock records ``stage`` as run with the current content of ``dep``."""
    try:
        lock = yaml.safe_load((repo / "dvc.lock").read_text()) or {}
    except (FileNotFoundError, yaml.YAMLError):
        return False  # DVC rewrites the file in place: caught half-written, read it again
    md5 = hashlib.md5(dep.read_bytes()).hexdigest()
    deps = lock.get("stages", {}).get(stage, {}).get("deps", [])
    return any(d["path"] == str(dep.relative_to(repo)) and d["md5"] == md5 for d in deps)


def _runs_command(proc: subprocess.Popen, text: str) -> bool:
    """Whether a process under ``proc`` runs a command line containing ``text``."""
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if text in " ".join(child.cmdline()):
                return True
        except psutil.Error:  # it ended while we looked
            continue
    return False


def test_a_killed_repro_finishes_without_redoing_completed_stages(repo):
    config = repo / "conf" / "optimizer" / "adam.yaml"
    config.write_text(config.read_text().replace("eps: 1.0e-02", "eps: 2.0e-02"))
    env = {**ENV, "OPTSTUDY_ROOT": str(repo)}
    proc = subprocess.Popen(
        [DVC, "repro"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 600
    # Killed while the next stage's command runs, as a long study almost always is: DVC
    # rewrites .dvc/tmp/rwlock in place between stages, and a SIGKILL inside that write leaves
    # a file DVC itself cannot read again (treeverse/dvc#7615), which no pipeline can prevent.
    while not (
        _locked_with(repo, "tune@adam-constant", config)  # DVC recorded the stage
        and _runs_command(proc, "optstudy.study select")
    ):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    tuned = next((repo / RESULTS / "tune" / "adam-constant").rglob("metrics.json"))
    done = tuned.stat().st_mtime_ns
    ran = _stages_run(_run([DVC, "repro"], repo).stdout)
    assert "tune@adam-constant" not in ran and {"select", "report"} <= ran
    assert tuned.stat().st_mtime_ns == done
    assert "Data and pipelines are up to date" in _run([DVC, "status"], repo).stdout

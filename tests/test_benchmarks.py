"""The benchmark scripts run as documented, clock what they say, and write their JSON (the
numbers themselves are measured on a quiet machine and kept in benchmarks/README.md, not
asserted here)."""

import importlib
import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, comparable, read_metrics


def run_script(name: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    script = ROOT / "benchmarks" / name
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, cwd=ROOT,
        timeout=timeout,
    )  # fmt: skip


@pytest.mark.slow  # 3 arms × 2 repeats × 205 LeNet-5 steps: over 10 minutes on 2 busy cores
def test_throughput_compares_the_hand_loop_with_pipeline_arms(tmp_path):
    out = tmp_path / "throughput.json"
    args = ["--cases", "lenet5-fmnist", "--repeats", "2", "--out", str(out)]
    arm = ["--arm", "no_diagnostics", "callbacks.diagnostics=null"]
    result = run_script("throughput.py", *args, *arm)
    assert result.returncode == 0, result.stderr[-3000:]
    case = json.loads(out.read_text())["cases"]["lenet5-fmnist"]
    assert (case["batch_size"], case["warmup"], case["steps"]) == (128, 5, 200)
    assert case["arms"] == {"pipeline": [], "no_diagnostics": arm[2:]}
    # Steps 5-204 were clocked: the default arm measured its diagnostics on 50, 100, 150, 200.
    assert case["diagnostics_interval"] == 50
    assert case["diagnostics_steps_clocked"] == {"pipeline": 4, "no_diagnostics": 0}
    rates = case["samples_per_s"]
    assert set(rates) == {"hand", "pipeline", "no_diagnostics"}
    assert all(len(r) == 2 and min(r) > 0 for r in rates.values())
    for arm_name in ("pipeline", "no_diagnostics"):
        expected = case["median"][arm_name] / case["median"]["hand"]
        assert case["ratio"][arm_name] == pytest.approx(expected, rel=1e-3)
    assert "| lenet5-fmnist | 128 | 200 (pipeline 4, no_diagnostics 0) |" in result.stdout


def test_every_case_clocks_diagnostics_steps_in_the_proportion_of_a_run(tmp_path, monkeypatch):
    """Each case's clocked steps are a whole number of diagnostics intervals (so they hold one
    measured step per interval, as a run does), and at least one."""
    monkeypatch.syspath_prepend(ROOT / "benchmarks")
    monkeypatch.setenv("OPTSTUDY_ROOT", str(ROOT))
    throughput = importlib.import_module("throughput")
    for name, case in throughput.CASES.items():
        overrides = throughput.run_overrides(case, "cpu", tmp_path / "cache", compiled=False)
        cfg, _ = throughput.cli.compose(overrides, tmp_path)
        interval = throughput.diagnostics_interval(name, case, cfg)
        clocked = range(case.warmup, case.warmup + case.steps)
        assert sum(step % interval == 0 for step in clocked) == case.steps // interval >= 1, name


def test_startup_measures_time_to_first_step(tmp_path):
    out = tmp_path / "startup.json"
    result = run_script("startup.py", "--repeats", "1", "--out", str(out), "data=digits")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["overrides"] == ["data=digits"]
    assert 0 < report["median_cached_s"] < 120 and report["cached_s"] == [report["median_cached_s"]]


def test_grouped_compares_one_process_per_run_with_a_grouped_sweep(tmp_path):
    out = tmp_path / "grouped.json"
    args = ["--runs", "2", "--repeats", "1", "--members", "3", "--out", str(out)]
    tiny = ["data=digits", "model=mlp", "trainer.limit_val_batches=1", "trainer.max_epochs=1"]
    result = run_script("grouped.py", *args, *tiny)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["runs"] == 2 and report["overrides"] == tiny
    assert all(len(s) == 1 and s[0] > 0 for s in report["seconds"].values())
    medians = report["median_s"]
    expected = medians["one_process_per_run"] / medians["grouped"]
    assert report["speedup"] == pytest.approx(expected, rel=1e-3)
    assert len(report["rss_mb"]) == 3 and min(report["rss_mb"]) > 0


def test_the_process_launcher_trains_each_run_of_a_sweep_in_its_own_process(tmp_path):
    """study_repro.py's per-process arm: each job its own train.py (a sweep of that one job),
    in the run directory the sweep gives it, trained as the grouped sweep trains it."""
    tiny = ["data=digits", "model=mlp", "trainer.max_epochs=1", "trainer.limit_val_batches=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "benchmarks")}
    runs, logs = {}, {}
    for launcher in ("hydra/launcher=processes", "launcher=grouped"):
        sweep = tmp_path / launcher.split("=")[1]
        command = [sys.executable, "train.py", "-m", *tiny, "seed=0,1", launcher]
        result = subprocess.run(
            [*command, f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path / 'cache'}"],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        logs[launcher] = result.stdout + result.stderr
        runs[launcher] = {
            p.parent.name: read_metrics(p.parent) for p in sweep.glob("*/metrics.json")
        }
    alone, grouped = runs.values()
    assert sorted(alone) == ["0-adam-constant-s0", "1-adam-constant-s1"] == sorted(grouped)
    # Each process of the first sweep ran Hydra's basic launcher on its one job.
    assert [log.count("Launching 1 jobs locally") for log in logs.values()] == [2, 0]
    assert all(m["group"] is None for m in alone.values())  # each trained by a plain process
    assert all(m["group"]["mode"] == "sequential" for m in grouped.values())
    assert {k: comparable(m) for k, m in alone.items()} == {
        k: comparable(m) for k, m in grouped.items()
    }


@pytest.mark.slow  # the smoke study's pipeline twice, 36 runs as 36 processes: over 10 minutes
def test_study_repro_times_both_arms_of_the_same_study(tmp_path):
    out = tmp_path / "study.json"
    result = run_script("study_repro.py", "--study", "smoke", "--out", str(out), timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["study"] == "smoke" and report["same_ranking"] is True
    assert report["run_directories"] == {"one_process_per_run": 36, "grouped": 36}
    seconds = report["seconds"]
    expected = seconds["one_process_per_run"] / seconds["grouped"]
    assert report["speedup"] == pytest.approx(expected, rel=1e-3)


@pytest.mark.slow  # twenty train.py processes: minutes on 2 cores
def test_fused_compares_vmap_sequential_and_one_process_per_run(tmp_path):
    out = tmp_path / "fused.json"
    # Two models: each fills its own data cache before its clocks.
    args = ["--models", "lenet5,cnn_3c3d", "--members", "1,2", "--steps", "2", "--seeds", "2"]
    result = run_script("fused.py", *args, "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["steps"] == 2
    assert set(report["speed"]) == {"lenet5", "cnn_3c3d"}
    speed = report["speed"]["lenet5"]
    assert set(speed) == {"1", "2"}
    for arms in speed.values():
        assert set(arms) == {"vmap", "sequential", "per_process"}
        # Each arm trained as it says: a vmap group fused, not fallen back to sequential.
        modes = {name: arm.pop("modes") for name, arm in arms.items()}
        assert modes == {"vmap": ["vmap"], "sequential": ["sequential"], "per_process": ["alone"]}
        assert all(min(arm.values()) > 0 for arm in arms.values())
    same = report["equivalence"]
    assert same["modes"] == {"vmap": ["vmap"], "sequential": ["sequential"]}
    assert [len(a) for a in same["final_val_acc"].values()] == [2, 2]
    assert 0 <= same["p_value"] <= 1
    assert "| lenet5 | 2 |" in result.stdout

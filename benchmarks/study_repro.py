"""A study's ``dvc repro``, one process per run against grouped sweeps, side by side.

    python benchmarks/study_repro.py [--study default] [--out FILE]

Each arm clones this repository's committed HEAD into a new folder, fills ``data/`` by the
documented fetch step (not timed), then times ``dvc repro`` of the study's pipeline, launch to
exit:

* one process per run: the pipeline and its stages as they are, but each stage's sweep launched
  by :class:`ProcessPerRunLauncher`
  (``benchmarks/hydra_plugins/optstudy_process_launcher``), every run its own ``python train.py``
  process (how the pipeline trained before grouped sweeps);
* grouped: the pipeline as it is, each tune and final stage one sweep whose runs train in groups.

Both arms must train the same runs: the script checks that their reports' rankings
(``ranking.csv``) are identical, which they are when the groups train sequentially (the CPU's
``auto``). The JSON goes to ``--out``.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from processes import ROOT
from report_file import write_report

# The per-process arm's launcher= choice, picking the launcher's registered Hydra config.
PROCESS_LAUNCHER = "# @package _global_\ndefaults:\n  - override /hydra/launcher: processes\n"
# Where the tune and final stages' commands start their tail (the launcher choice goes before).
SWEEP_ARGS = "paths.cache_dir=cache hydra.sweep.dir="


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Run ``command`` in ``cwd``; return its wall seconds, or stop with its error."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(
            f"{' '.join(command)} failed in {cwd}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return seconds


def project(dest: Path, study: str, per_process: bool, env: dict[str, str]) -> None:
    """Clone the project into ``dest``, its pipeline on ``study`` and data/ filled; with
    ``per_process``, its tune and final stages launch one process per run."""
    _run(["git", "clone", "-q", str(ROOT), str(dest)], ROOT, env)
    pipeline = dest / "dvc.yaml"
    text = pipeline.read_text().replace("conf/study/default.yaml", f"conf/study/{study}.yaml")
    if per_process:
        assert text.count(SWEEP_ARGS) == 2, "the tune and final stages' commands changed"
        text = text.replace(SWEEP_ARGS, f"launcher=processes {SWEEP_ARGS}")
        (dest / "conf/launcher/processes.yaml").write_text(PROCESS_LAUNCHER)
    pipeline.write_text(text)
    _run([sys.executable, "-m", "optstudy.data.fetch", "data=fashion_mnist"], dest, env)


def run_dirs(results: Path) -> int:
    """How many run directories (each with its metrics.json) the study wrote."""
    return sum(1 for _ in results.rglob("metrics.json"))


def main(argv: list[str] | None = None) -> int:
    """Time both arms, compare their rankings, write the JSON; print the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="default")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/study-repro-cpu.json"
    )
    args = parser.parse_args(argv)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(Path(__file__).parent),
        "DVC_NO_ANALYTICS": "1",
    }
    seconds, runs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm, per_process in (("one_process_per_run", True), ("grouped", False)):
            repo = Path(tmp) / arm
            arm_env = {**env, "OPTSTUDY_ROOT": str(repo)}
            project(repo, args.study, per_process, arm_env)
            seconds[arm] = round(_run(["dvc", "repro"], repo, arm_env), 1)
            runs[arm] = run_dirs(repo / "results" / args.study)
            print(f"{arm}: {seconds[arm]:.0f} s, {runs[arm]} run directories", flush=True)
        ranking = Path("results") / args.study / "report" / "ranking.csv"
        same = filecmp.cmp(*(Path(tmp) / arm / ranking for arm in seconds), shallow=False)
    report = {
        "study": args.study,
        "commit": commit,
        "seconds": seconds,
        "run_directories": runs,
        "speedup": round(seconds["one_process_per_run"] / seconds["grouped"], 3),
        "same_ranking": same,
    }
    write_report(args.out, report)
    print(f"grouped is {report['speedup']:.2f}× faster; rankings identical: {same}")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

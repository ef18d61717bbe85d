"""Time from ``python train.py`` to the first training step, with the data set already cached.

    python benchmarks/startup.py [--repeats 5] [train.py overrides ...]

Runs ``train.py`` (default: the default run, LeNet-5 on Fashion-MNIST) once to fill a fresh
cache, then ``--repeats`` times as a new process, each stopping after one training step. A
callback (:class:`timing.FirstStepStamp`) notes the wall clock when the first step starts; the
time to first step is that minus the moment the process was launched. The JSON goes to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report_file import write_report  # benchmarks/, the script's folder, is on sys.path

ROOT = Path(__file__).resolve().parents[1]
ONE_STEP = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def launch(overrides: list[str], work: Path, name: str) -> float:
    """Run train.py for one step; return seconds from launch to the start of that step."""
    stamp = work / f"{name}.json"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *overrides,
        *ONE_STEP,
        f"paths.cache_dir={work / 'cache'}",
        f"hydra.run.dir={work / name}",
        "+callbacks.first_step._target_=timing.FirstStepStamp",
        f"+callbacks.first_step.path={stamp}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    launched = time.time()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"train.py failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(stamp.read_text())["first_step"] - launched


def main(argv: list[str] | None = None) -> int:
    """Measure and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/startup.json")
    parser.add_argument("overrides", nargs="*", help="train.py overrides")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cold = launch(args.overrides, work, "fill-cache")
        seconds = [launch(args.overrides, work, f"run{i}") for i in range(args.repeats)]
    report = {
        "overrides": args.overrides,
        "cold_cache_s": round(cold, 3),
        "cached_s": [round(s, 3) for s in seconds],
        "median_cached_s": round(statistics.median(seconds), 3),
    }
    write_report(args.out, report)
    print(
        f"time to first step: {report['median_cached_s']} s (median of {args.repeats}, cached "
        f"data); {report['cold_cache_s']} s when the cache is filled first"
    )
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

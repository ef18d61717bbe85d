"""Timing ``python train.py`` as a user runs it: one process, launch to exit (the benchmarks
that compare whole processes share it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]


def train(args: list[str], cache: Path) -> float:
    """Run ``python train.py args`` (data cached in ``cache``); return its wall time in
    seconds, or stop the benchmark with the run's error."""
    command = [sys.executable, str(ROOT / "train.py"), *args, *QUIET, f"paths.cache_dir={cache}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"train.py failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return seconds

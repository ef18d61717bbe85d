"""What a run says on the console: where it writes, how it ended, how to resume it.

Imports neither torch nor Lightning.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optstudy.artifacts import DIVERGED, HISTORY_FILE, METRICS_FILE

# Command-line keys that name a run's or a sweep's folder (replaced in a resume command).
DIR_KEYS = ("hydra.run.dir", "hydra.sweep.dir")


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def outcome(metrics: Mapping[str, Any]) -> str:
    """How a run ended, in one line: its status, budget and main numbers."""
    epochs = metrics["epochs"]
    budget = (
        f"{epochs} epoch{'s' * (epochs != 1)}, {metrics['steps']} steps, "
        f"{metrics['train_time_s']:.1f} s"
    )
    if metrics["status"] == DIVERGED:
        return f"run diverged ({budget}): best val_acc {_number(metrics['best_val_acc'])}"
    test = "" if metrics["test_acc"] is None else f", test_acc {_number(metrics['test_acc'])}"
    return (
        f"run {metrics['status']} ({budget}): best val_acc {_number(metrics['best_val_acc'])}, "
        f"final val_acc {_number(metrics['final_val_acc'])}{test}"
    )


def where_to_look(run_dir: Path) -> str:
    """Where a finished run's results are, and how to compare runs."""
    return (
        f"results: {run_dir}/{METRICS_FILE}, {HISTORY_FILE}; compare runs with "
        f"python -m optstudy.report {run_dir.parent} --out <report folder>"
    )


def resume_command(argv: Sequence[str], key: str, directory: Path) -> str:
    """The command line ``argv`` (``sys.argv``) with ``key`` (a :data:`DIR_KEYS` entry) set
    to ``directory``: the same run or sweep, in the same folder, so it resumes."""
    kept = [a for a in argv[1:] if not a.startswith(tuple(f"{k}=" for k in DIR_KEYS))]
    return shlex.join(["python", argv[0], *kept, f"{key}={directory}"])

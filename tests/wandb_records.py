"""Read a W&B run file (``run-<id>.wandb``) back with wandb's own reader.

wandb 0.31 has no Python reader for its transaction log any more; ``wandb leet inspect --json``
(shipped with wandb) decodes it into one JSON object per protobuf ``Record``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class WandbRunFile:
    """What a run file holds: the run record (id, display_name, run_group, job_type, tags,
    project), the config and summary with all updates applied, history items in order, and
    the exit code (None while the run was never finished)."""

    run: dict[str, Any]
    config: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    exit_code: int | None


def run_files(wandb_dir: Path) -> list[Path]:
    """The run files of all runs under a ``wandb/`` folder."""
    return sorted(wandb_dir.glob("*run-*/run-*.wandb"))


def read_run_file(path: Path, env: dict[str, str] | None = None) -> WandbRunFile:
    """Decode one ``.wandb`` file."""
    out = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    ).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    (run,) = (r["run"] for r in records if r["type"] == "run")
    config = dict(run.get("config", {}).get("update", {}))
    summary: dict[str, Any] = {}
    for record in records:
        if record["type"] == "config":
            config.update(record["config"].get("update", {}))
        elif record["type"] == "summary":
            summary.update(record["summary"].get("update", {}))
    config.pop("_wandb", None)
    exits = [r["exit"].get("exit_code", 0) for r in records if r["type"] == "exit"]
    return WandbRunFile(
        run=run,
        config=config,
        history=[r["history"]["item"] for r in records if r["type"] == "history"],
        summary=summary,
        exit_code=exits[-1] if exits else None,
    )

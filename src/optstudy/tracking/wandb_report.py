"""Send a study report (its verdicts, tables and plots) to W&B as the study's report run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from optstudy.tracking.wandb_logger import build_wandb_logger


def log_study_report(
    out_dir: Path,
    study_name: str,
    tables: Mapping[str, Path],
    plots: Sequence[Path] = (),
    verdicts: Mapping[str, str] | None = None,
    offline: bool = False,
) -> Path:
    """Log each CSV of ``tables`` as a W&B table of its name, each PNG of ``plots`` as an image
    ``plots/<file stem>`` and each claim's verdict as ``claims/<claim>`` in the run summary, to
    one run with job_type ``report`` in the study's group; online or offline by the same rules
    as training runs, its files under ``out_dir``/wandb. Return the run's local folder (what
    ``wandb sync`` takes)."""
    import wandb

    out_dir.mkdir(parents=True, exist_ok=True)
    logger = build_wandb_logger(
        save_dir=out_dir,
        name=f"{study_name}-report",
        job_type="report",
        group=study_name,
        tags=[study_name, "report"],
        offline=offline,
    )
    run = logger.experiment
    run.log(
        {
            **{name: wandb.Table(dataframe=pd.read_csv(path)) for name, path in tables.items()},
            **{f"plots/{plot.stem}": wandb.Image(str(plot)) for plot in plots},
        }
    )
    for claim, verdict in (verdicts or {}).items():
        run.summary[f"claims/{claim}"] = verdict
    run.finish()
    return Path(run.sync_dir)

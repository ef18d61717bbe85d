"""A Hydra launcher for the benchmarks only: every job of a sweep as its own ``python train.py``
process, one after the other, into the run directory the sweep would have given it. Each process
is a sweep of that one job (Hydra's basic sweeper and launcher), since a study's runs are only
accepted as part of a sweep (``python train.py study=...`` is refused). It is how
``dvc repro`` trained a study before grouped sweeps (one process per run), for
``benchmarks/study_repro.py`` to compare with. With ``benchmarks/`` on ``PYTHONPATH`` Hydra
finds it as ``hydra/launcher=processes``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus

from hydra_plugins.optstudy_grouped_launcher.grouped_launcher import GroupedLauncher


class ProcessPerRunLauncher(GroupedLauncher):
    """Run each job of a sweep as a separate ``train.py`` process (the grouping launcher's
    setup and job configs, none of its grouping)."""

    def _run_dir(self, overrides: Sequence[str], number: int) -> Path:
        """The directory the sweep gives job ``number`` (``hydra.sweep.dir``/``subdir``)."""
        config = self._job_config(overrides, number)
        HydraConfig.instance().set_config(config)
        return Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run the jobs one after the other (with the ``train.py`` the sweep ran); stop at the
        first that fails."""
        results = []
        for number, overrides in enumerate(job_overrides, initial_job_idx):
            run_dir = self._run_dir(overrides, number)
            command = [
                sys.executable, sys.argv[0], "-m", *overrides,
                "hydra/sweeper=basic", "hydra/launcher=basic",
                f"hydra.sweep.dir={run_dir.parent}", f"hydra.sweep.subdir={run_dir.name}",
            ]  # fmt: skip
            if subprocess.run(command).returncode:
                sys.exit(f"job {number} failed: {' '.join(command[1:])}")
            results.append(JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED))
        return results


ConfigStore.instance().store(
    group="hydra/launcher",
    name="processes",
    node={"_target_": f"{__name__}.{ProcessPerRunLauncher.__name__}"},
    provider="optstudy-benchmarks",
)

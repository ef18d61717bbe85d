"""Lightning's CSV logger, but a resumed run appends to its step log instead of deleting it."""

from __future__ import annotations

import csv

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv``: the writer appends to it (and re-heads it when new
    columns appear), where Lightning's deletes it as a leftover of an unrelated run."""

    def _check_log_dir_exists(self) -> None:
        """Keep what an interrupted attempt of this run logged, and its columns."""
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class ResumableCSVLogger(CSVLogger):
    """:class:`CSVLogger` whose ``metrics.csv`` survives a resume of the same run directory."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer, created on first use."""
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

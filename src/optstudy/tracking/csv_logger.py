"""Lightning's CSV logger, but a resumed run appends to its step log instead of deleting it,
and a write that fails (a full disk) or is killed never leaves a torn file behind."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from contextlib import nullcontext, suppress
from pathlib import Path

from pytorch_lightning.core.saving import save_hparams_to_yaml
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from optstudy.atomic import atomic_write, atomic_write_csv
from optstudy.errors import WriteError, writing


def _drop_torn_line(path: Path) -> None:
    """Cut ``path`` back to its last complete line (a killed append leaves a torn one)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        os.truncate(path, data.rfind(b"\n") + 1)


def _append_rows(path: Path, columns: Sequence[str], rows: Iterable[dict]) -> None:
    """Append ``rows`` to the CSV file ``path``; when that fails, cut it back to what it was."""
    size = path.stat().st_size
    try:
        with writing(path), open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=columns).writerows(rows)
    except BaseException:
        os.truncate(path, size)
        raise


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv``: the writer appends to it (and re-heads it when new
    columns appear), where Lightning's deletes it as a leftover of an unrelated run. An append
    that fails is undone, and the torn line of a killed one is dropped on resume; the file is
    rewritten atomically when its columns change, ``hparams.yaml`` always."""

    def _check_log_dir_exists(self) -> None:
        """Keep what an interrupted attempt of this run logged, and its columns."""
        path = Path(self.metrics_file_path)
        if path.is_file():
            _drop_torn_line(path)
            with open(path, newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])

    def log_hparams(self, params: dict) -> None:
        """Record hparams and write ``hparams.yaml``."""
        self.hparams.update(params)
        path = Path(self.log_dir) / self.NAME_HPARAMS_FILE
        atomic_write(path, lambda tmp: save_hparams_to_yaml(tmp, self.hparams))

    def save(self) -> None:
        """Write the rows logged since the last save after those of the file."""
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        if self._record_new_keys() or not path.is_file():
            rows = []
            if path.is_file():
                with open(path, newline="") as f:
                    rows = list(csv.DictReader(f))
            atomic_write_csv(path, self.metrics_keys, [*rows, *self.metrics])
        else:
            _append_rows(path, self.metrics_keys, self.metrics)
        self.metrics = []


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

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Save the rows not saved yet; when the run failed, a save that fails as well (on a
        full disk) does not hide the error that ended the run."""
        with suppress(WriteError) if status == "failed" else nullcontext():
            super().finalize(status)

"""The job's log file (``<run dir>/<job name>.log``, Hydra's job logging)."""

from __future__ import annotations

import logging
import sys
from contextlib import suppress

from optstudy.errors import as_write_error


class JobLogFile(logging.FileHandler):
    """Hydra's file handler, but a log line that cannot be written for lack of space or
    permission stops the log quietly (where Python prints a traceback for each such line): the
    run's own next write then ends the run with the one ``error:`` line naming the path."""

    stopped = False

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record``, unless the log has stopped."""
        if not self.stopped:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """Stop the log on a full disk or a lost permission; report anything else."""
        error = sys.exc_info()[1]
        if error is None or as_write_error(error, self.baseFilename) is None:
            super().handleError(record)
            return
        self.stopped = True
        stream, self.stream = self.stream, None
        with suppress(OSError):  # what it still holds cannot be written either
            stream.close()

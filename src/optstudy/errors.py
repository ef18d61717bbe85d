"""Errors users can fix themselves: the entry points print them as one line and exit non-zero."""


class OptstudyError(Exception):
    """Base class of expected, user-fixable errors (bad config, missing or corrupt data)."""


class ConfigError(OptstudyError):
    """A configuration value is invalid."""


class DataError(OptstudyError):
    """A data set is missing, unreadable or does not match what its config declares."""


class RunInterrupted(Exception):
    """The run was stopped by SIGTERM or Ctrl-C after saving a checkpoint it can resume from;
    the process exits with ``exit_code`` (128 + the signal's number, as a shell reports it)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def find_user_error(exc: BaseException) -> OptstudyError | None:
    """The expected error behind ``exc`` (libraries such as Hydra wrap it), if there is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OptstudyError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None

"""Lightning callbacks of the project (the rest come from Lightning itself)."""

from optstudy.callbacks.history import EpochHistory

__all__ = ["EpochHistory"]

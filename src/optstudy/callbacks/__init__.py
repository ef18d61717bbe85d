"""Lightning callbacks of the project (the rest come from Lightning itself)."""

from optstudy.callbacks.diagnostics import OptimizerDiagnostics
from optstudy.callbacks.history import EpochHistory, EpochRecorder
from optstudy.callbacks.resume import InterruptCheckpoint, ResumableRun, resume_from

__all__ = [
    "EpochHistory",
    "EpochRecorder",
    "InterruptCheckpoint",
    "OptimizerDiagnostics",
    "ResumableRun",
    "resume_from",
]

"""A study: collect run directories, aggregate them over seeds, plot and report."""

from optstudy.study.aggregate import summarize
from optstudy.study.collect import Study, StudyError, find_run_dirs, load_study

__all__ = ["Study", "StudyError", "find_run_dirs", "load_study", "summarize"]

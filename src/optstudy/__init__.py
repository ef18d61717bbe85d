"""optstudy: reproducible optimizer and learning-rate-schedule studies for image classifiers."""

__version__ = "0.1.0"

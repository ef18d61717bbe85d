"""Experiment tracking: the run config for every logger (``run_config``), and Weights & Biases
runs (``wandb_*``).

The package imports nothing itself: Hydra's job-end callback (``wandb_job_end``) is loaded by
every command, which must not pay for Lightning's loggers or wandb before it needs them.
"""

"""Experiment tracking: the run config for every logger, and Weights & Biases runs.

Nothing here imports wandb at module level: it is imported only when ``logger=wandb`` is chosen
or a report is sent to W&B, since importing it is slow.
"""

from optstudy.tracking.run_config import log_config, plain_config

__all__ = ["log_config", "plain_config"]

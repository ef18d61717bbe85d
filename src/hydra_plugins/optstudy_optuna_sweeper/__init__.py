"""Hydra sweeper plugin of optstudy: ``hydra/sweeper=optuna_ask_tell`` searches with Optuna."""

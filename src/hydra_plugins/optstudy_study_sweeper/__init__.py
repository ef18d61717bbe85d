"""Hydra sweeper plugin of optstudy: ``hydra/sweeper=study`` runs a phase of a tuned study."""

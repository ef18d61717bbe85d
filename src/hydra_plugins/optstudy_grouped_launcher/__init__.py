"""Hydra launcher plugin of optstudy: ``launcher=grouped`` trains a sweep's runs in groups."""

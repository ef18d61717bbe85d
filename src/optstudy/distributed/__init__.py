"""Runs over several processes (Lightning DDP) and sweeps whose jobs share a machine:
``devices`` (a job's GPU, light: used while configs resolve), ``processes`` (who starts a DDP
run's processes)."""

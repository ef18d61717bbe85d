"""The Optuna sweeper's settings, registered as ``hydra/sweeper=optuna_ask_tell``
(``conf/hparams_search/lr_optuna.yaml`` documents each one)."""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaAskTellSweeperConf:
    """Settings of the Optuna sweeper (``optuna_sweeper.OptunaAskTellSweeper``)."""

    _target_: str = "hydra_plugins.optstudy_optuna_sweeper.optuna_sweeper.OptunaAskTellSweeper"
    # maximize or minimize what each job returns.
    direction: str = "maximize"
    # The study's name in the storage.
    study_name: str = "optstudy"
    # None: in memory; a database URL (sqlite:///optuna.db) keeps the study and continues it.
    storage: str | None = None
    # Finished trials the study should have (those of earlier searches count).
    n_trials: int = 20
    # Trials asked at once and launched as one batch.
    n_jobs: int = 1
    # tpe, random or qmc, seeded with seed.
    sampler: str = "tpe"
    seed: int | None = None
    # The search space (setting → range or Hydra sweep); empty: the optimizer's search_space.
    params: dict[str, Any] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="optuna_ask_tell",
    node=OptunaAskTellSweeperConf,
    provider="optstudy",
)

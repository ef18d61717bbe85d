"""The study sweeper's settings, registered as ``hydra/sweeper=study``."""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore


@dataclass
class StudySweeperConf:
    """Settings of the study sweeper (``study_sweeper.StudySweeper``)."""

    _target_: str = "hydra_plugins.optstudy_study_sweeper.study_sweeper.StudySweeper"
    # Which runs: tune (the tuning grid and the library-defaults runs) or final.
    phase: str = "tune"
    # Only these optimizers / schedules of the study (empty: all): a DVC stage's share.
    optimizers: list[str] = field(default_factory=list)
    schedulers: list[str] = field(default_factory=list)
    # The final phase's settings, written by `python -m optstudy.study select`.
    selected: str = "${hydra.sweep.dir}/../selected.yaml"


ConfigStore.instance().store(
    group="hydra/sweeper", name="study", node=StudySweeperConf, provider="optstudy"
)

"""Train one classifier: ``python train.py optimizer=adagrad`` (Hydra composes conf/train.yaml)."""

import logging
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from optstudy import cli, quiet, resolvers

cli.project_root(Path(__file__).resolve().parent)
resolvers.register()
quiet.install()
log = logging.getLogger("optstudy.train")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run one job of a run or sweep; expected errors end it with one line and exit code 2.
    In a sweep a failed job is reported and the sweep goes on; each job returns the value a
    sweeper (Optuna) maximises, see :func:`optstudy.sweep.objective`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from optstudy.console import resume_command, where_to_look
    from optstudy.errors import RunInterrupted
    from optstudy.sweep import objective, report_failed_job
    from optstudy.validation import validate

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN

    def run() -> dict:
        validate(cfg)  # before the heavy training imports, so bad input fails fast
        from optstudy.run import train

        return train(cfg, out_dir, hydra_cfg.runtime.choices, HydraConfig.instance().cfg)

    try:
        metrics = run() if in_sweep else cli.guarded(run)
    except RunInterrupted as exc:
        same = ("hydra.sweep.dir", hydra_cfg.sweep.dir) if in_sweep else ("hydra.run.dir", out_dir)
        print(
            f"interrupted: {exc}; to resume, run: {resume_command(sys.argv, *same)}",
            file=sys.stderr,
        )
        sys.exit(exc.exit_code)
    except Exception as exc:
        if not in_sweep:
            raise
        if cli.debugging():
            # Hydra's launchers keep a job's exception until the other jobs have run: stop now.
            traceback.print_exc()
            sys.exit(1)
        report_failed_job(exc, out_dir)
        return None
    if not in_sweep:
        log.info(where_to_look(out_dir))
    return objective(metrics)


if __name__ == "__main__":
    cli.guarded(lambda: cli.check_command_line(sys.argv[1:]))
    main()

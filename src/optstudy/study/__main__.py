"""Run a tuned study end to end, or one of its steps:

    python -m optstudy.study run study=default [train.py overrides ...]
    python -m optstudy.study select study=default [--runs DIR] [--out DIR]
    python -m optstudy.study prepare study=default [paths.cache_dir=cache]

``run``: tune (the tuning grid and the library-defaults runs) → select (on validation) →
final (fresh seeds at the selected settings) → report, into ``results/<study>/`` (the report
in ``results/<study>/report/``); a plain study (no ``study.tuning``, e.g. ``e4``) is its sweep
and the report. Each training phase is one ``python train.py -m`` sweep of the
study sweeper (``hydra/sweeper=study``), its runs trained in groups. ``select`` writes
``selected.yaml`` and ``selection.json`` from the tuning runs; ``prepare`` decodes the data
sets of the study's tasks into the cache.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from optstudy import cli
from optstudy.errors import ConfigError
from optstudy.study.collect import load_study
from optstudy.study.protocol import Protocol, load_protocol
from optstudy.study.select import select_settings, write_selection

ROOT_RESULTS = Path("results")


def study_name(overrides: list[str]) -> str:
    """The ``study=<name>`` among ``overrides``; :class:`ConfigError` when there is none."""
    names = [o.split("=", 1)[1] for o in overrides if o.startswith("study=")]
    if not names:
        raise ConfigError("name the study: python -m optstudy.study run study=<name>")
    return names[-1]


def protocol_and_spaces(overrides: list[str]) -> tuple[Protocol, dict[str, Any]]:
    """The study's protocol and each of its optimizers' search space, composed as train.py
    composes the study's runs."""
    from omegaconf import OmegaConf

    cfg, _ = cli.compose(overrides)
    if OmegaConf.select(cfg, "study") is None:
        raise ConfigError("name the study: study=<name>")
    protocol = load_protocol(cfg.study)
    spaces = {}
    for optimizer in protocol.optimizers:
        optimizer_cfg, _ = cli.compose([*overrides, f"optimizer={optimizer}"])
        spaces[optimizer] = OmegaConf.to_container(optimizer_cfg.optimizer.search_space)
    return protocol, spaces


def select(overrides: list[str], runs: Path, out: Path) -> Path:
    """Select every configuration's setting from the tuning runs under ``runs``."""
    protocol, spaces = protocol_and_spaces(overrides)
    chosen = select_settings(load_study([runs]), protocol, spaces)
    write_selection(chosen, out)
    for config, tasks in sorted(chosen.items()):
        for task, entry in sorted(tasks.items()):
            print(f"{task} {config}: {entry['setting']} (validation {entry['score']:.4f})")
    return out


def prepare(overrides: list[str]) -> None:
    """Decode the data set of every task of the study into the cache."""
    from hydra.utils import instantiate

    from optstudy.data.cache import prepare as prepare_source
    from optstudy.data.prepare import summary

    protocol, _ = protocol_and_spaces(overrides)
    for data in dict.fromkeys(task.data for task in protocol.tasks):
        cfg, _ = cli.compose([*overrides, f"data={data}"])
        print(summary(prepare_source(instantiate(cfg.data.source), Path(cfg.data.cache_dir))))


def train_phase(phase: str, overrides: list[str], results: Path) -> None:
    """One training phase: ``python train.py -m`` of the study sweeper."""
    command = [
        sys.executable,
        str(cli.project_root() / "train.py"),
        "-m",
        *overrides,
        f"hydra.sweeper.phase={phase}",
        f"hydra.sweep.dir={results / phase}",
        f"hydra.sweeper.selected={results / 'selected.yaml'}",
    ]
    print(f"== {phase}: {' '.join(command[2:])}", flush=True)
    if subprocess.run(command, cwd=cli.project_root()).returncode:
        raise ConfigError(f"the {phase} phase failed (see its output above)")


def sweep(overrides: list[str], results: Path) -> None:
    """A plain study (a sweep without a tuning block): ``python train.py -m`` into ``results``."""
    command = [sys.executable, str(cli.project_root() / "train.py"), "-m", *overrides]
    command.append(f"hydra.sweep.dir={results}")
    print(f"== sweep: {' '.join(command[2:])}", flush=True)
    if subprocess.run(command, cwd=cli.project_root()).returncode:
        raise ConfigError("the sweep failed (see its output above)")


def run(overrides: list[str]) -> None:
    """A tuned study: tune → select → final → report; a plain one: its sweep → report."""
    from omegaconf import OmegaConf

    from optstudy.study.report import write_report

    results = ROOT_RESULTS / study_name(overrides)
    cfg, _ = cli.compose(overrides)
    if OmegaConf.select(cfg, "study.tuning") is None:
        sweep(overrides, results)
    else:
        train_phase("tune", overrides, results)
        select(overrides, results / "tune", results)
        train_phase("final", overrides, results)
    written = write_report([results], results / "report")
    print(f"report: {results / 'report' / 'report.html'} ({len(written)} files)")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the step."""
    parser = argparse.ArgumentParser(prog="python -m optstudy.study", description=__doc__)
    steps = parser.add_subparsers(dest="step", required=True)
    run_parser = steps.add_parser("run", help="tune → select → final → report")
    run_parser.add_argument("overrides", nargs="+", help="study=<name> and train.py overrides")
    select_parser = steps.add_parser("select", help="select settings from the tuning runs")
    select_parser.add_argument("overrides", nargs="+", help="study=<name> and train.py overrides")
    select_parser.add_argument("--runs", type=Path, help="the tuning runs (results/<study>/tune)")
    select_parser.add_argument("--out", type=Path, help="folder for selected.yaml")
    prepare_parser = steps.add_parser("prepare", help="decode the data sets of the study's tasks")
    prepare_parser.add_argument("overrides", nargs="+", help="study=<name> and train.py overrides")
    args = parser.parse_args(argv)
    cli.project_root()
    if args.step == "run":
        return cli.command(lambda: run(args.overrides))
    if args.step == "prepare":
        return cli.command(lambda: prepare(args.overrides))

    def select_step() -> None:
        results = ROOT_RESULTS / study_name(args.overrides)
        select(args.overrides, args.runs or results / "tune", args.out or results)

    return cli.command(select_step)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m optstudy.report RUNS... --out DIR``: the report of a study's run directories."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from optstudy.cli import command
from optstudy.errors import ConfigError
from optstudy.rundir import check_writable
from optstudy.study.profile import COSTS
from optstudy.study.report import READING_METRICS, SENT_TABLES, write_report


def send_report(out_dir: Path, study: str) -> Path:
    """Log the written report to W&B as the study's report run: its tables (rankings,
    tuneability, claims, summary), the claims' verdicts and its plots (see
    :func:`optstudy.tracking.wandb_report.log_study_report`); return its local folder."""
    from optstudy.tracking.wandb_report import log_study_report

    tables = {name: out_dir / f"{name}.csv" for name in SENT_TABLES}
    claims = json.loads((out_dir / "summary.json").read_text()).get("claims", {})
    return log_study_report(
        out_dir,
        study,
        {name: path for name, path in tables.items() if path.is_file()},
        sorted(out_dir.glob("*.png")),
        {name: claim["verdict"] for name, claim in claims.items()},
    )


def study_name(out_dir: Path, first_runs: Path) -> str:
    """The study a written report is of: its tuned study's name (summary.json), else the name
    of the first folder of runs."""
    name = json.loads((out_dir / "summary.json").read_text()).get("study")
    return name or first_runs.resolve().name


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one ``error: ...`` line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print ``message`` as one line and exit 2."""
        self.exit(2, f"error: {message} (see --help)\n")


def share(text: str) -> float:
    """An argparse type: a number in (0, 1] (an accuracy, or a share of one)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:  # also false for nan
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]: write 85% as 0.85")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of the report."""
    parser = OneLineParser(prog="python -m optstudy.report", description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="sweep or run directories to collect")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the report to")
    parser.add_argument(
        "--metric", default="test_acc", choices=READING_METRICS,
        help="metric the automatic reading compares (default: test_acc)",
    )  # fmt: skip
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--target", type=share, help="time-to-target validation accuracy, in (0, 1]"
    )
    target.add_argument(
        "--target-fraction", type=share, default=0.95,
        help="without --target: this share of each task's best mean best_val_acc (default 0.95)",
    )  # fmt: skip
    parser.add_argument(
        "--profile-by", default="steps", choices=sorted(COSTS),
        help="the time of the performance profile over tasks: optimizer steps (default) or "
        "seconds to the validation target",
    )  # fmt: skip
    parser.add_argument(
        "--wandb", action="store_true",
        help="also send the verdicts, tables and plots to W&B as the study's report run "
        "(offline unless an API key is configured, like training runs)",
    )  # fmt: skip
    parser.add_argument(
        "--study", help="the W&B group (study name) of the report run (default: the tuned "
        "study's name, else the name of the first RUNS folder)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Write the report (and send it to W&B with ``--wandb``); expected errors end with one
    ``error:`` line and exit code 2."""
    args = parse_args(argv)

    def action() -> None:
        try:
            check_writable(args.out)
        except ConfigError as exc:
            raise ConfigError(f"--out: {exc}") from exc
        written = write_report(
            args.runs, args.out, args.metric, args.target, args.target_fraction, args.profile_by
        )
        print(f"wrote {len(written)} files to {args.out} (report: {args.out / 'report.html'})")
        if args.wandb:
            run_dir = send_report(args.out, args.study or study_name(args.out, args.runs[0]))
            print(f"sent the report to W&B (local run folder: {run_dir})")

    return command(action)


if __name__ == "__main__":
    sys.exit(main())

"""``python -m optstudy.report RUNS... --out DIR``: the report of a study's run directories."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from optstudy.errors import ConfigError, find_user_error
from optstudy.rundir import check_writable
from optstudy.study.report import READING_METRICS, write_report


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one ``error: ...`` line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print ``message`` as one line and exit 2."""
        self.exit(2, f"error: {message} (see --help)\n")


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
    target.add_argument("--target", type=float, help="time-to-target validation accuracy")
    target.add_argument(
        "--target-fraction", type=float, default=0.95,
        help="without --target: this share of each task's best mean best_val_acc (default 0.95)",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Write the report; expected errors end with one ``error:`` line and exit code 2."""
    args = parse_args(argv)
    try:
        check_writable(args.out)
    except ConfigError as exc:
        print(f"error: --out: {exc}", file=sys.stderr)
        return 2
    try:
        written = write_report(args.runs, args.out, args.metric, args.target, args.target_fraction)
    except Exception as exc:
        error = find_user_error(exc)
        if error is None or os.environ.get("OPTSTUDY_DEBUG"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {args.out} (report: {args.out / 'report.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

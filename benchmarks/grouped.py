"""A sweep grouped in one process against one process per run, and memory over a long group.

    python benchmarks/grouped.py [--runs 6] [--repeats 3] [--members 50] [train.py overrides ...]

speed: the same ``--runs`` LeNet-5 runs on Fashion-MNIST (seeds 0…runs-1, the default study's
budget: 5 epochs of 100 batches, full validation and test) trained, alternately, as one
``python train.py`` process per run, one after the other (what ``dvc repro`` did per run), and
as one ``python train.py -m launcher=grouped`` sweep; wall time from launch to exit, data
cached beforehand. memory: one grouped sweep of ``--members`` tiny members (2 steps each) with
:class:`timing.RecordRSS` noting the resident memory after every member. The JSON goes to --out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from processes import ROOT, train
from report_file import write_report

BUDGET = ["trainer.max_epochs=5", "trainer.limit_train_batches=100", "trainer=cpu"]
TINY = [
    "data=digits",
    "model=mlp",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "callbacks.diagnostics=null",
]


def one_process_per_run(runs: int, overrides: list[str], work: Path) -> float:
    """Seconds for ``runs`` separate processes, one after the other."""
    return sum(
        train([*BUDGET, *overrides, f"seed={seed}", f"hydra.run.dir={work / f'run{seed}'}"], work)
        for seed in range(runs)
    )


def grouped(runs: int, overrides: list[str], work: Path) -> float:
    """Seconds for the same runs as one grouped sweep."""
    seeds = "seed=" + ",".join(map(str, range(runs)))
    args = ["-m", "launcher=grouped", *BUDGET, *overrides, seeds]
    return train([*args, f"hydra.sweep.dir={work / 'sweep'}"], work)


def memory(members: int, work: Path) -> list[int]:
    """Resident memory (bytes) after each member of a grouped sweep of tiny members."""
    rss = work / "rss.txt"
    seeds = "seed=" + ",".join(map(str, range(members)))
    probe = ["+hydra.callbacks.rss._target_=timing.RecordRSS", f"+hydra.callbacks.rss.path={rss}"]
    args = ["-m", "launcher=grouped", *TINY, seeds, *probe, f"hydra.sweep.dir={work / 'mem'}"]
    train(args, work)
    return [int(line) for line in rss.read_text().split()]


def main(argv: list[str] | None = None) -> int:
    """Measure both and write the JSON; print the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/grouped-cpu.json")
    parser.add_argument("overrides", nargs="*", help="train.py overrides for the speed runs")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {"one_process_per_run": [], "grouped": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train([*BUDGET, *args.overrides, "trainer.max_epochs=1", "trainer.limit_train_batches=1",
               f"hydra.run.dir={work / 'fill-cache'}"], work)  # fmt: skip
        for repeat in range(args.repeats):
            for arm, measure in (
                ("one_process_per_run", one_process_per_run),
                ("grouped", grouped),
            ):
                folder = work / f"{arm}-{repeat}"
                times[arm].append(round(measure(args.runs, args.overrides, folder), 2))
        rss = memory(args.members, work) if args.members else []
    medians = {arm: statistics.median(seconds) for arm, seconds in times.items()}
    report = {
        "runs": args.runs,
        "budget": BUDGET,
        "overrides": args.overrides,
        "seconds": times,
        "median_s": medians,
        "speedup": round(medians["one_process_per_run"] / medians["grouped"], 3),
        "memory_members": args.members,
        "rss_mb": [round(r / 2**20, 1) for r in rss],
    }
    write_report(args.out, report)
    print(f"{args.runs} runs, {args.repeats} repeats (median wall seconds):")
    print(f"  one process per run: {medians['one_process_per_run']:.1f} s")
    print(f"  grouped:             {medians['grouped']:.1f} s  ({report['speedup']:.2f}× faster)")
    if rss:
        mb = report["rss_mb"]
        picks = sorted({0, 4, 9, 24, len(mb) - 1} & set(range(len(mb))))
        print("resident memory after member " + ", ".join(f"{i + 1}: {mb[i]} MB" for i in picks))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fused groups (``launcher.mode=vmap``) against sequential groups and one process per run.

    python benchmarks/fused.py [--models lenet5,cnn_3c3d] [--members 1,2,4,8,16]
                               [--steps 20] [--device cpu|cuda] [--seeds 8] [--out FILE]

speed: for each model and group size M, the same M runs (seeds 0…M−1, CIFAR-10-shaped
``data=synthetic``, batch 128) trained three ways, each a ``python train.py`` command:

* vmap: one ``-m launcher=grouped launcher.mode=vmap`` sweep (the members fused);
* sequential: one ``-m launcher=grouped launcher.mode=sequential`` sweep (one process, the
  members one after another);
* per process: M ``train.py`` processes one after the other.

Steps: every run (in vmap: the group) clocks ``--steps`` training steps after 3 warm-up ones
(:class:`timing.StepTimer`): samples/s = members × batch × steps / the clocked seconds (their
sum, for runs one after another). Wall: the same samples over the command's wall time from
launch to exit (start-up, validation, test and writes included). Memory: the peak per member,
on a GPU from metrics.json's ``peak_gpu_memory_mb`` (divided by M in vmap), on the CPU the
process's peak resident set (:class:`timing.RecordPeakMemory`; it is mostly the libraries).

equivalence: ``--seeds`` seeds of LeNet-5 on the bundled digits (5 epochs) trained as one vmap
group and as a sequential group: mean and standard deviation of the final validation accuracy
of each, and Welch's t-test of the difference (within seed noise when p is large).

The JSON goes to ``--out``; the tables are printed as markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

from processes import ROOT, train
from report_file import write_report

BATCH = 128
WARMUP = 3
CIFAR_SHAPED = ["data=synthetic", f"data.batch_size={BATCH}"]
# The digits runs of the equivalence check.
EQUIVALENCE = ["data=digits", "model=lenet5", "optimizer=adam", "trainer.max_epochs=5"]
ARMS = ("vmap", "sequential", "per_process")


def run_overrides(model: str, steps: int, device: str) -> list[str]:
    """One epoch of the warm-up and clocked steps of ``model`` on ``device`` (the step clock
    is added by :func:`clock`)."""
    return [
        f"model={model}",
        *CIFAR_SHAPED,
        "trainer=gpu" if device == "cuda" else "trainer=cpu",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={WARMUP + steps}",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "+callbacks.clock._target_=timing.StepTimer",
        f"+callbacks.clock.warmup={WARMUP}",
        f"+callbacks.clock.last={WARMUP + steps - 1}",
        "+hydra.callbacks.memory._target_=timing.RecordPeakMemory",
    ]


def clock(arm: str, work: Path) -> str:
    """Where the step clock writes: each run in its run directory; a vmap group once, in
    ``work`` (a callback that is not per member must be set the same for every member, or
    the group trains sequentially)."""
    folder = str(work) if arm == "vmap" else "${hydra:runtime.output_dir}"
    return f"+callbacks.clock.path={folder}/steps.json"


def seeds(members: int) -> str:
    return "seed=" + ",".join(map(str, range(members)))


def run_dirs(folder: Path) -> list[Path]:
    """The run directories below ``folder`` (those with a metrics.json)."""
    return sorted(p.parent for p in folder.rglob("metrics.json"))


def measure(arm: str, members: int, overrides: list[str], work: Path) -> dict[str, float]:
    """Train ``members`` runs one way; their step and wall samples/s, peak memory and the
    mode their metrics.json says they trained in."""
    overrides = [*overrides, clock(arm, work)]
    if arm == "per_process":
        wall = sum(
            train([*overrides, f"seed={s}", f"hydra.run.dir={work / f'run{s}'}"], work)
            for s in range(members)
        )
    else:
        mode = f"launcher.mode={arm}"
        args = ["-m", "launcher=grouped", mode, *overrides, seeds(members)]
        wall = train([*args, f"hydra.sweep.dir={work / 'sweep'}"], work)
    runs = run_dirs(work)
    clocks = [json.loads(p.read_text())["seconds"] for p in work.rglob("steps.json")]
    steps = int(next(o for o in overrides if "limit_train_batches" in o).split("=")[1]) - WARMUP
    samples = members * BATCH * steps
    metrics = [json.loads((run / "metrics.json").read_text()) for run in runs]
    gpu = [m["peak_gpu_memory_mb"] for m in metrics if m["peak_gpu_memory_mb"] is not None]
    # A vmap group holds every member at once; the other arms one member at a time.
    shared = members if arm == "vmap" else 1
    peaks = gpu or [json.loads(p.read_text())["rss_mb"] for p in work.rglob("memory.json")]
    memory = max(peaks) / shared
    wall_samples = members * BATCH * (WARMUP + steps)
    return {
        "step_samples_per_s": round(samples / sum(clocks), 1),
        "wall_samples_per_s": round(wall_samples / wall, 1),
        "wall_s": round(wall, 2),
        "peak_memory_per_member_mb": round(memory, 1),
        "modes": sorted({(m["group"] or {}).get("mode", "alone") for m in metrics}),
    }


def equivalence(count: int, work: Path) -> dict[str, object]:
    """Final validation accuracies of ``count`` seeds, fused and sequential, and Welch's t."""
    from scipy import stats

    accuracies, modes = {}, {}
    for arm in ("vmap", "sequential"):
        folder = work / f"equivalence-{arm}"
        args = ["-m", "launcher=grouped", f"launcher.mode={arm}", *EQUIVALENCE, seeds(count)]
        train([*args, f"hydra.sweep.dir={folder}"], work)
        metrics = [json.loads((run / "metrics.json").read_text()) for run in run_dirs(folder)]
        accuracies[arm] = [m["final_val_acc"] for m in metrics]
        modes[arm] = sorted({m["group"]["mode"] for m in metrics})  # how each arm really trained
    test = stats.ttest_ind(accuracies["vmap"], accuracies["sequential"], equal_var=False)
    return {
        "overrides": EQUIVALENCE,
        "modes": modes,
        "final_val_acc": accuracies,
        "mean": {arm: statistics.mean(a) for arm, a in accuracies.items()},
        "std": {arm: statistics.stdev(a) for arm, a in accuracies.items()},
        "welch_t": round(float(test.statistic), 3),
        "p_value": round(float(test.pvalue), 3),
    }


def table(rows: dict[str, dict[int, dict[str, dict[str, float]]]]) -> str:
    """The speed results as a markdown table."""
    lines = [
        "| model | members | vmap steps samples/s | sequential | per process | vmap ÷ sequential "
        "| vmap wall samples/s | sequential wall | per process wall | peak MB per member "
        "(vmap / sequential) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, sizes in rows.items():
        for members, arms in sizes.items():
            v, s, p = (arms[a] for a in ARMS)
            ratio = v["step_samples_per_s"] / s["step_samples_per_s"]
            lines.append(
                f"| {model} | {members} | {v['step_samples_per_s']:.0f} "
                f"| {s['step_samples_per_s']:.0f} | {p['step_samples_per_s']:.0f} "
                f"| {ratio:.2f} | {v['wall_samples_per_s']:.0f} | {s['wall_samples_per_s']:.0f} "
                f"| {p['wall_samples_per_s']:.0f} | {v['peak_memory_per_member_mb']:.0f} / "
                f"{s['peak_memory_per_member_mb']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, write the JSON and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="lenet5,cnn_3c3d")
    parser.add_argument("--members", default="1,2,4,8,16")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--seeds", type=int, default=8, help="0: no equivalence check")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or ROOT / f"benchmarks/results/fused-{args.device}.json"
    rows: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for model in args.models.split(","):
            overrides = run_overrides(model, args.steps, args.device)
            fill = work / f"fill-cache-{model}"  # decode the data once, before the clocks
            train([*overrides, clock("per_process", fill), f"hydra.run.dir={fill}"], work)
            for members in map(int, args.members.split(",")):
                for arm in ARMS:
                    folder = work / f"{model}-{members}-{arm}"
                    result = measure(arm, members, overrides, folder)
                    rows.setdefault(model, {}).setdefault(members, {})[arm] = result
        same = equivalence(args.seeds, work) if args.seeds else None
    report = {
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "batch": BATCH,
        "steps": args.steps,
        "speed": rows,
        "equivalence": same,
    }
    write_report(out, report)
    print(table(rows))
    if same:
        print(
            f"\nfinal val acc over {args.seeds} seeds: vmap {same['mean']['vmap']:.4f} ± "
            f"{same['std']['vmap']:.4f}, sequential {same['mean']['sequential']:.4f} ± "
            f"{same['std']['sequential']:.4f} (Welch t {same['welch_t']}, p {same['p_value']})"
        )
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

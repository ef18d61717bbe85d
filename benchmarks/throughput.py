"""Training throughput of the pipeline against a hand-written PyTorch loop, in one process.

    python benchmarks/throughput.py                  # CPU: every case, 5 interleaved repeats
    python benchmarks/throughput.py --device cuda    # the GPU path (trainer=gpu)

For each case the script composes the run config as ``train.py`` does and alternates, repeat by
repeat, between

* the hand loop: the same model, initial weights, optimizer and batch size; forward, loss,
  backward and step over batches made (sliced and normalised) before the clock starts;
* the pipeline: :func:`optstudy.run.train`, the function ``train.py`` calls, with the default
  callbacks and loggers, timed from inside the Lightning run by :class:`timing.StepTimer`.

Both clock the same training steps (after ``warmup`` steps) on the same thread count; the
ratio is pipeline samples/s over hand-loop samples/s. The clocked steps are a multiple of the
run's optimizer-diagnostics interval, so they hold measured diagnostics steps in the
proportion of a whole run (one per interval); the JSON records how many each arm measured.
The JSON goes to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from report_file import write_report  # benchmarks/, the script's folder, is on sys.path
from timing import sync

from optstudy import cli
from optstudy.data import build_datamodule
from optstudy.module import input_memory_format
from optstudy.optim import optimizer_from_config
from optstudy.run import train

ROOT = cli.project_root(Path(__file__).resolve().parents[1])

FASHION_SHAPED = ["data=synthetic", "data.channels=1", "data.image_size=[28,28]"]


@dataclass(frozen=True)
class Case:
    """A model on a data shape, and how many steps to clock (after ``warmup`` untimed ones):
    a multiple of the diagnostics interval, so that the clocked steps hold one measured step
    per interval, as a whole run does."""

    overrides: tuple[str, ...]
    steps: int
    warmup: int = 5


CASES = {
    # Clocks steps 5-204, of which 50, 100, 150 and 200 are measured (interval 50).
    "lenet5-fmnist": Case(("model=lenet5", *FASHION_SHAPED), steps=200),
    # Clocks steps 5-54, of which 50 is measured.
    "cnn_3c3d-fmnist": Case(("model=cnn_3c3d", *FASHION_SHAPED), steps=50),
    # A step takes seconds on a CPU: 5 clocked steps (1-5) with step 5 measured, i.e. every
    # 5 steps, ten times the default rate: an upper bound of the default's cost.
    "resnet18-cifar": Case(
        ("model=resnet18", "data=synthetic", "callbacks.diagnostics.interval=5"), steps=5, warmup=1
    ),
}


def run_overrides(case: Case, device: str, cache_dir: Path, compiled: bool) -> list[str]:
    """The case's overrides plus one epoch of just the clocked steps on ``device``."""
    return [
        *case.overrides,
        "trainer=gpu" if device == "cuda" else "trainer=cpu",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={case.warmup + case.steps}",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        f"paths.cache_dir={cache_dir}",
        f"module.compile={str(compiled).lower()}",
    ]


def hand_loop(cfg: DictConfig, case: Case, device: torch.device) -> float:
    """Seconds for the clocked steps of a plain PyTorch loop over pre-made batches."""
    torch.manual_seed(cfg.seed)
    datamodule = build_datamodule(cfg.data, cfg.seed)
    datamodule.setup("fit")
    batches = [
        datamodule.on_after_batch_transfer((x.to(device), y.to(device)), 0)
        for x, y in islice(datamodule.train_dataloader(), case.warmup + case.steps)
    ]
    fmt = input_memory_format(cfg.module.channels_last, device)
    batches = [(x.contiguous(memory_format=fmt), y) for x, y in batches]
    model = instantiate(cfg.model).to(device, memory_format=fmt)
    optimizer = optimizer_from_config(cfg.optimizer, model, cfg.module.decay_norm_and_bias)
    forward = torch.compile(model) if cfg.module.compile else model
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=cfg.trainer.precision == "bf16-mixed"
    )
    start = 0.0
    for i, (x, y) in enumerate(batches):
        if i == case.warmup:
            sync(device)
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()
    sync(device)
    return time.perf_counter() - start


def pipeline(cfg: DictConfig, choices: dict[str, str], case: Case, out_dir: Path) -> float:
    """Seconds for the clocked steps of :func:`optstudy.run.train` (the path of train.py)."""
    with open_dict(cfg):
        cfg.callbacks.step_timer = {
            "_target_": "timing.StepTimer",
            "path": str(out_dir / "step_timer.json"),
            "warmup": case.warmup,
            "last": case.warmup + case.steps - 1,
        }
    train(cfg, out_dir, choices)
    return json.loads((out_dir / "step_timer.json").read_text())["seconds"]


def diagnostics_interval(name: str, case: Case, cfg: DictConfig) -> int | None:
    """The run's diagnostics interval (None when off); an error unless the clocked steps are
    a multiple of it."""
    interval = OmegaConf.select(cfg, "callbacks.diagnostics.interval")
    if interval and case.steps % interval:
        raise ValueError(
            f"{name}: {case.steps} clocked steps are no multiple of the diagnostics interval "
            f"{interval}: the clock would hold measured steps out of proportion"
        )
    return interval


def clocked_diagnostics(out_dir: Path, case: Case) -> int:
    """How many of the clocked steps the run measured its optimizer diagnostics on."""
    path = out_dir / "diagnostics.csv"
    if not path.exists():
        return 0
    with open(path) as f:
        steps = {int(row["step"]) for row in csv.DictReader(f)}
    return sum(case.warmup <= step < case.warmup + case.steps for step in steps)


def measure(
    name: str, case: Case, arms: dict[str, list[str]], args: argparse.Namespace, work: Path
) -> dict[str, object]:
    """Interleave the hand loop with each pipeline arm (extra overrides; ``pipeline`` has none),
    repeat by repeat in a rotating order; return samples/s, medians and ratios to the hand loop,
    and how many clocked steps each arm measured diagnostics on."""
    device = torch.device(args.device)
    kinds = ["hand", *arms]
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    measured: dict[str, int] = {}
    overrides = run_overrides(case, args.device, work / "cache", args.compile)
    interval = diagnostics_interval(name, case, cli.compose(overrides, work)[0])
    for repeat in range(args.repeats):
        shift = repeat % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            out_dir = work / f"{name}-{kind}-{repeat}"
            cfg, choices = cli.compose([*overrides, *arms.get(kind, [])], out_dir)
            if kind == "hand":
                seconds = hand_loop(cfg, case, device)
            else:
                seconds = pipeline(cfg, choices, case, out_dir)
                measured[kind] = clocked_diagnostics(out_dir, case)
            rates[kind].append(case.steps * cfg.data.batch_size / seconds)
            print(f"{name} repeat {repeat} {kind}: {rates[kind][-1]:.0f} samples/s", flush=True)
    medians = {kind: statistics.median(r) for kind, r in rates.items()}
    return {
        "overrides": list(case.overrides),
        "batch_size": cfg.data.batch_size,
        "warmup": case.warmup,
        "steps": case.steps,
        "diagnostics_interval": interval,
        "diagnostics_steps_clocked": measured,
        "arms": arms,
        "samples_per_s": rates,
        "median": {kind: round(m, 1) for kind, m in medians.items()},
        "ratio": {kind: round(medians[kind] / medians["hand"], 4) for kind in arms},
    }


def table(results: dict[str, dict[str, object]]) -> str:
    """The results as a Markdown table: the clocked steps (and how many of them each arm
    measured diagnostics on), samples/s of each arm and its ratio to the hand loop."""
    arms = list(next(iter(results.values()))["arms"])
    head = ["case", "batch", "clocked steps (diagnostics)", "hand loop"]
    head += [f"{arm} (ratio)" for arm in arms]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        measured = ", ".join(f"{arm} {n}" for arm, n in r["diagnostics_steps_clocked"].items())
        cells = [name, str(r["batch_size"]), f"{r['steps']} ({measured})"]
        cells.append(f"{r['median']['hand']:.0f}")
        cells += [f"{r['median'][arm]:.0f} ({r['ratio'][arm]:.3f})" for arm in arms]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name (Linux), else what the platform module knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep Lightning's and the run's info logging and warnings out of the benchmark output."""
    logging.disable(logging.INFO)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    logging.disable(logging.NOTSET)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen cases and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides")
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    parser.add_argument(
        "--arm",
        nargs="+",
        action="append",
        default=[],
        metavar=("NAME", "OVERRIDE"),
        help="another pipeline arm: a name and its train.py overrides, e.g. "
        "--arm no_diagnostics callbacks.diagnostics=null",
    )
    args = parser.parse_args(argv)
    arms = {"pipeline": [], **{name: overrides for name, *overrides in args.arm}}
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp, quiet():
        for name in args.cases.split(","):
            results[name] = measure(name, CASES[name], arms, args, Path(tmp))
    report = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "compile": args.compile,
        "cases": results,
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"throughput-{args.device}.json"
    write_report(out, report)
    print(table(results))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

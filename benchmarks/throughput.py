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
ratio is pipeline samples/s over hand-loop samples/s. The JSON goes to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
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
from omegaconf import DictConfig, open_dict
from timing import sync  # benchmarks/, the script's folder, is on sys.path

from optstudy import cli
from optstudy.data import build_datamodule
from optstudy.module import input_memory_format
from optstudy.optim import optimizer_from_config
from optstudy.run import train

ROOT = cli.project_root(Path(__file__).resolve().parents[1])

FASHION_SHAPED = ["data=synthetic", "data.channels=1", "data.image_size=[28,28]"]


@dataclass(frozen=True)
class Case:
    """A model on a data shape, and how many steps to clock (after ``warmup`` untimed ones)."""

    overrides: tuple[str, ...]
    steps: int
    warmup: int = 5


CASES = {
    "lenet5-fmnist": Case(("model=lenet5", *FASHION_SHAPED), steps=200),
    "cnn_3c3d-fmnist": Case(("model=cnn_3c3d", *FASHION_SHAPED), steps=40),
    "resnet18-cifar": Case(("model=resnet18", "data=synthetic"), steps=5, warmup=1),
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


def measure(
    name: str, case: Case, arms: dict[str, list[str]], args: argparse.Namespace, work: Path
) -> dict[str, object]:
    """Interleave the hand loop with each pipeline arm (extra overrides; ``pipeline`` has none),
    repeat by repeat in a rotating order; return samples/s, medians and ratios to the hand loop."""
    device = torch.device(args.device)
    kinds = ["hand", *arms]
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    for repeat in range(args.repeats):
        shift = repeat % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            out_dir = work / f"{name}-{kind}-{repeat}"
            overrides = run_overrides(case, args.device, work / "cache", args.compile)
            cfg, choices = cli.compose([*overrides, *arms.get(kind, [])], out_dir)
            seconds = (
                hand_loop(cfg, case, device)
                if kind == "hand"
                else pipeline(cfg, choices, case, out_dir)
            )
            rates[kind].append(case.steps * cfg.data.batch_size / seconds)
            print(f"{name} repeat {repeat} {kind}: {rates[kind][-1]:.0f} samples/s", flush=True)
    medians = {kind: statistics.median(r) for kind, r in rates.items()}
    return {
        "overrides": list(case.overrides),
        "batch_size": cfg.data.batch_size,
        "steps": case.steps,
        "arms": arms,
        "samples_per_s": rates,
        "median": {kind: round(m, 1) for kind, m in medians.items()},
        "ratio": {kind: round(medians[kind] / medians["hand"], 4) for kind in arms},
    }


def table(results: dict[str, dict[str, object]]) -> str:
    """The results as a Markdown table: samples/s of each arm and its ratio to the hand loop."""
    arms = list(next(iter(results.values()))["arms"])
    head = ["case", "batch", "hand loop", *(f"{arm} (ratio)" for arm in arms)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [name, str(r["batch_size"]), f"{r['median']['hand']:.0f}"]
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
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

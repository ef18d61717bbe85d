"""The optimizers beyond the classic eleven, in real runs: each trains LeNet-5 on Fashion-MNIST
above chance, resumes after SIGTERM to the uninterrupted run's metrics and writes diagnostics;
Schedule-Free validates, tests and saves the weights it evaluates; Prodigy logs its step size;
under DDP they end like one process; an optimizer of the user's own runs end to end and shows
in the report; bad optimizer input is one line."""

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import NEW_OPTIMIZERS, comparable, read_history, read_metrics, run_train
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_report import run_report
from test_robustness import WITH_HELPERS
from test_scale_out import ONE_PROCESS, TOLERANCE, TWO_PROCESSES, assert_same_metrics

from optstudy.artifacts import DIAGNOSTICS_COLUMNS as COLUMNS
from optstudy.data import build_datamodule
from optstudy.optim import optimizer_from_config
from optstudy.optim.schedule_free import BATCHNORM_BATCHES, TRAIN_WEIGHTS

# 60 steps: two epochs of 30 batches, two validation and two test batches (of 1,000),
# diagnostics every 10 steps.
SHORT = ["trainer.max_epochs=2", "trainer.limit_train_batches=30", "trainer.limit_val_batches=2"]
SHORT += ["trainer.limit_test_batches=2", "trainer.log_every_n_steps=10"]
SHORT += ["callbacks.diagnostics.interval=10"]
# A real SIGTERM in the middle of epoch 1.
SIGTERM_AT_45 = ["+callbacks.kill._target_=helpers.sigterm_at.SigtermAt", "+callbacks.kill.step=45"]
# Where the effective step size is undefined (NaN in diagnostics.csv).
UNDEFINED = {"schedulefree_adamw", "schedulefree_sgd", "soap"}
# LeNet-5's layers, and the whole model.
LAYERS = [
    "all", "net.features.0", "net.features.3", "net.classifier.0", "net.classifier.2",
    "net.classifier.4",
]  # fmt: skip


def _diagnostics(run_dir) -> list[dict]:
    with open(run_dir / "diagnostics.csv") as f:
        return list(csv.DictReader(f))


def _check_diagnostics(run_dir, name: str) -> None:
    """Rows at steps 0, 10, …, 50 for every layer; norms always, η where it is defined."""
    rows = _diagnostics(run_dir)
    assert list(rows[0]) == list(COLUMNS)
    assert [(int(r["step"]), r["layer"]) for r in rows] == [
        (step, layer) for step in range(0, 60, 10) for layer in LAYERS
    ]
    for row in rows:
        assert float(row["grad_norm"]) > 0 and float(row["param_norm"]) > 0
        # ADOPT's and SOAP's first steps only gather statistics: no update yet.
        assert float(row["update_norm"]) > 0 or (name in ("adopt", "soap") and row["step"] == "0")
        etas = [float(row[c]) for c in ("eff_step_p10", "eff_step_median", "eff_step_p90")]
        if name in UNDEFINED:
            assert all(math.isnan(eta) for eta in etas)
        else:
            assert all(math.isfinite(eta) and eta > 0 for eta in etas)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache_dir, fashion_mnist_dir) -> dict[str, Path]:
    """Each new optimizer's short run, uninterrupted: one grouped sweep (one process; each job
    writes what it would have written alone), by optimizer name."""
    sweep_dir = tmp_path_factory.mktemp("new_optimizers")
    args = ["-m", "launcher=grouped", f"optimizer={','.join(NEW_OPTIMIZERS)}", *SHORT]
    result = run_train([*args, f"hydra.sweep.dir={sweep_dir}"], sweep_dir / "unused", cache_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = {read_metrics(d)["optimizer"]: d for d in sweep_dir.iterdir() if d.name[0].isdigit()}
    assert sorted(runs) == sorted(NEW_OPTIMIZERS)
    return runs


@pytest.mark.parametrize("name", NEW_OPTIMIZERS)
def test_trains_above_chance_resumes_after_sigterm_and_writes_diagnostics(
    name, tmp_path, cache_dir, uninterrupted
):
    full, cut = uninterrupted[name], tmp_path / "cut"
    args = [f"optimizer={name}", *SHORT]
    metrics = read_metrics(full)
    assert (metrics["status"], metrics["steps"], metrics["optimizer"]) == ("completed", 60, name)
    assert metrics["test_acc"] > 0.3  # chance is 0.1; the lowest, Lion at its lr 1e-4: ~0.43
    _check_diagnostics(full, name)
    if name == "prodigy":  # lr-free: its estimated step size goes to the loggers
        _check_step_size_estimate(full)

    first = run_train([*args, *SIGTERM_AT_45], cut, cache_dir, env=WITH_HELPERS)
    assert first.returncode == 143, first.stderr[-2000:]
    assert (
        torch.load(cut / "checkpoints" / "interrupted.ckpt", weights_only=True)["global_step"] == 45
    )
    second = run_train([*args, *SIGTERM_AT_45], cut, cache_dir, env=WITH_HELPERS)
    assert second.returncode == 0, second.stderr[-2000:]
    assert comparable(read_metrics(cut)) == comparable(metrics)
    assert read_history(cut) == read_history(full)
    assert (cut / "diagnostics.csv").read_text() == (full / "diagnostics.csv").read_text()


def _check_step_size_estimate(run_dir) -> None:
    """Prodigy's d·lr, logged every 10 steps: grown from d0 = 1e-6 by the first log, and never
    shrinking."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("step_size_estimate")]
    estimates = [float(row["step_size_estimate"]) for row in rows]
    assert len(estimates) == 6 and estimates[0] > 1e-5 and estimates == sorted(estimates)


def _net(cfg, state_dict: dict) -> torch.nn.Module:
    """The run's network with the ``net.*`` entries of a checkpoint's state dict."""
    net = instantiate(cfg.model)
    net.load_state_dict({k.removeprefix("net."): v for k, v in state_dict.items() if "net." in k})
    return net.eval()


def _accuracy_and_loss(net: torch.nn.Module, datamodule, batches) -> tuple[float, float]:
    correct, loss, count = 0, 0.0, 0
    with torch.no_grad():
        for batch in batches:
            images, labels = datamodule.on_after_batch_transfer(batch, 0)
            logits = net(images)
            correct += int((logits.argmax(1) == labels).sum())
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            count += len(labels)
    return correct / count, loss / count


def test_schedule_free_validates_tests_and_saves_the_weights_it_evaluates(tmp_path, cache_dir):
    """VGG-small (batch norm) on digits with Schedule-Free AdamW. The last checkpoint holds the
    weights x that optimizer.eval() makes of the trained weights y (kept beside them for
    resuming) and the optimizer state, with batch-norm statistics recomputed at x over the
    first training batches; the last validation and the test, computed here by hand on those
    weights and statistics, are what the run reported."""
    run_dir = tmp_path / "run"
    args = ["data=digits", "model=vgg_small", "optimizer=schedulefree_adamw"]
    args += ["trainer.max_epochs=2", "callbacks.diagnostics=null"]
    result = run_train(args, run_dir, cache_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    evaluated = _net(cfg, checkpoint["state_dict"])
    trained = _net(cfg, {**checkpoint["state_dict"], **checkpoint[TRAIN_WEIGHTS]})
    pairs = list(zip(trained.parameters(), evaluated.parameters(), strict=True))
    assert all(not torch.equal(y, x) for y, x in pairs)

    optimizer = optimizer_from_config(cfg.optimizer, trained, cfg.module.decay_norm_and_bias)
    optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    optimizer.eval()
    assert all(torch.equal(y, x) for y, x in pairs)  # bit for bit

    datamodule = build_datamodule(cfg.data, cfg.seed, None)
    datamodule.prepare_data()
    datamodule.setup("fit")
    # The first batch-norm layer's statistics: the average over the statistics batches of
    # each batch's per-channel mean and (unbiased) variance of the first convolution's output.
    conv, norm = evaluated.features[0], evaluated.features[1]
    outputs = [conv(x) for x, _ in datamodule.statistics_batches(BATCHNORM_BATCHES)]
    with torch.no_grad():
        mean = torch.stack([out.mean((0, 2, 3)) for out in outputs]).mean(0)
        var = torch.stack([out.var((0, 2, 3)) for out in outputs]).mean(0)
    torch.testing.assert_close(norm.running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.running_var, var, rtol=1e-5, atol=1e-6)

    # Float32 sums in another order: equal to ~1e-6.
    last = read_history(run_dir)[-1]
    acc, loss = _accuracy_and_loss(evaluated, datamodule, datamodule.val_dataloader())
    assert (float(last["val_acc"]), float(last["val_loss"])) == (
        pytest.approx(acc, abs=1e-6),
        pytest.approx(loss, rel=1e-5),
    )
    metrics = read_metrics(run_dir)
    acc, loss = _accuracy_and_loss(evaluated, datamodule, datamodule.test_dataloader())
    assert (metrics["test_acc"], metrics["test_loss"]) == (
        pytest.approx(acc, abs=1e-6),
        pytest.approx(loss, rel=1e-5),
    )
    assert metrics["test_acc"] > 0.5


TINY = ["data=digits", "model=mlp", "trainer.max_epochs=2"]
CUSTOM = ["optimizer=custom", "optimizer._target_=helpers.my_optimizers.SignSGD"]


def test_your_own_optimizer_runs_end_to_end_and_ranks_in_the_report(tmp_path, cache_dir):
    """A torch.optim.Optimizer subclass from a module outside the package, with an argument
    the template does not name (+optimizer.beta), next to Adam: the report names it by its
    class and ranks it."""
    study = tmp_path / "study"
    custom = [*TINY, *CUSTOM, "optimizer.lr=0.01", "+optimizer.beta=0.5"]
    result = run_train(custom, study / "mine", cache_dir, env=WITH_HELPERS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert run_train([*TINY, "optimizer=adam"], study / "adam", cache_dir).returncode == 0
    metrics = read_metrics(study / "mine")
    assert (metrics["status"], metrics["optimizer"], metrics["lr"]) == ("completed", "custom", 0.01)
    assert metrics["test_acc"] > 0.5  # chance: 0.1
    rows = _diagnostics(study / "mine")  # no effective-step rule: NaN, norms as ever
    assert rows and all(math.isnan(float(r["eff_step_median"])) for r in rows)
    assert all(float(r["grad_norm"]) > 0 for r in rows)

    out = tmp_path / "report"
    assert run_report(str(study), "--out", str(out)).returncode == 0
    with open(out / "summary.csv") as f:
        summary = {row["optimizer"]: row for row in csv.DictReader(f)}
    assert set(summary) == {"helpers.my_optimizers.SignSGD", "adam"}
    mine = summary["helpers.my_optimizers.SignSGD"]
    assert float(mine["test_acc_mean"]) == pytest.approx(metrics["test_acc"])
    assert "helpers.my_optimizers.SignSGD" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["optimizer=custom", "optimizer._target_=helpers.my_optimizers.Missing"],
            "error: optimizer._target_=helpers.my_optimizers.Missing cannot be imported: ",
        ),
        (
            ["optimizer=custom", "optimizer._target_=helpers.my_optimizers.NotAnOptimizer"],
            "error: optimizer._target_=helpers.my_optimizers.NotAnOptimizer is not an optimizer",
        ),
        (
            [*CUSTOM, "optimizer.lr=0.1", "+optimizer.momentum=0.9"],
            "error: optimizer: SignSGD.__init__() got an unexpected keyword argument 'momentum'",
        ),
        (
            [*CUSTOM, "optimizer.lr=0.1", "+optimizer.beta=1.5"],
            "error: optimizer: beta must be in [0, 1), got 1.5",
        ),
        ([*CUSTOM], "error: optimizer.lr is missing: set it, e.g. optimizer.lr="),
        (
            [
                "optimizer=custom",
                "optimizer._target_=helpers.my_optimizers.ForgetsTheClosure",
                "optimizer.lr=0.1",
            ],
            "error: optimizer: ForgetsTheClosure.step(closure) never calls its closure",
        ),
        (
            ["optimizer=schedulefree_adamw", "scheduler=cosine"],
            "error: AdamWScheduleFree is schedule-free: it takes scheduler=constant only",
        ),
    ],
)
def test_a_bad_optimizer_is_one_line_and_exit_2_before_training(args, message, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = run_train([*TINY, *args], run_dir, cache_dir, env=WITH_HELPERS)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr[-2000:]
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "checkpoints").exists()


# Muon orthogonalises each update by Newton-Schulz iterations, which lift singular values near
# zero towards one: the float-order noise of the all-reduced gradient in its weakest directions
# grows by orders of magnitude each step (5e-5 on the final loss after 16 steps was seen).
# 1e-3 still holds the accuracies to less than one validation example (1/216 = 0.0046).
DDP_TOLERANCE = {"muon": 1e-3}


@pytest.mark.parametrize("name", ["schedulefree_adamw", "muon", "prodigy"])
def test_two_ddp_processes_end_like_one(name, tmp_path, cache_dir):
    """Schedule-Free (weights swapped around every validation and checkpoint), Muon (two kinds
    of groups) and Prodigy (d estimated over all parameters) under DDP: two processes of 32
    examples end where one of 64 does (see tests/test_scale_out.py)."""
    run = ["data=digits", "model=mlp", f"optimizer={name}", "trainer.max_epochs=2"]
    run += ["trainer.limit_train_batches=8", "callbacks.diagnostics.interval=4"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_train([*run, *ONE_PROCESS], one, cache_dir).returncode == 0
    result = run_train([*run, *TWO_PROCESSES], two, cache_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_same_metrics(read_metrics(one), read_metrics(two), DDP_TOLERANCE.get(name, TOLERANCE))
    assert _diagnostics(two)  # rank zero measured

"""``python train.py`` end to end, as a user runs it."""

import csv
import math

import pytest
import torch
from conftest import read_metrics, run_train

from optstudy import cli
from optstudy.validation import validate

FAST = ["trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory, fashion_mnist_dir, cache_dir):
    run_dir = tmp_path_factory.mktemp("fm") / "run"
    result = run_train(
        ["optimizer=adagrad", "trainer.max_epochs=2", "trainer.limit_train_batches=60", *FAST],
        run_dir,
        cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_run_directory_holds_config_history_metrics_and_checkpoints(fashion_run):
    assert (fashion_run / ".hydra" / "config.yaml").is_file()
    assert {p.name for p in (fashion_run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    with open(fashion_run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert list(rows[0]) == [
        "epoch",
        "lr",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "elapsed_s",
    ]
    assert all(math.isfinite(float(v)) for r in rows for v in r.values())
    assert float(rows[0]["lr"]) == 0.01 and float(rows[1]["elapsed_s"]) > float(
        rows[0]["elapsed_s"]
    )
    m = read_metrics(fashion_run)
    assert m["status"] == "completed" and m["epochs"] == 2 and m["steps"] == 120
    assert (m["optimizer"], m["scheduler"], m["model"], m["data"], m["seed"]) == (
        "adagrad", "constant", "lenet5", "fashion_mnist", 0
    )  # fmt: skip
    assert m["best_val_acc"] == max(float(r["val_acc"]) for r in rows)
    assert m["final_val_acc"] == float(rows[-1]["val_acc"])
    assert 0.5 < m["test_acc"] <= 1 and m["train_time_s"] > 0


def test_checkpoint_loads_with_weights_only(fashion_run):
    ckpt = torch.load(fashion_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and any(k.startswith("net.") for k in ckpt["state_dict"])


def test_learns_well_above_chance(tmp_path, fashion_mnist_dir, cache_dir):
    """300 Adam steps of LeNet-5 on Fashion-MNIST: chance is 10%."""
    run_dir = tmp_path / "run"
    result = run_train(
        ["trainer.max_epochs=3", "trainer.limit_train_batches=100", *FAST], run_dir, cache_dir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_metrics(run_dir)["final_val_acc"] > 0.7


def test_epoch_schedule_sets_the_lr_each_epoch(tmp_path, cache_dir):
    """E3's lr = 0.1·exp(−0.1·epoch), read back from history.csv."""
    run_dir = tmp_path / "run"
    args = [
        "data=digits",
        "model=mlp",
        "optimizer=sgd",
        "optimizer.lr=0.1",
        "scheduler=exp_formula",
        "trainer.max_epochs=3",
    ]
    result = run_train(args, run_dir, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(run_dir / "history.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    assert lrs == pytest.approx([0.1 * math.exp(-0.1 * e) for e in range(3)], rel=1e-6)


def test_same_command_twice_gives_the_same_metrics(tmp_path, cache_dir):
    args = ["data=digits", "model=cnn_2c2d", "optimizer=momentum", "trainer.max_epochs=2", "seed=3"]
    runs = []
    for name in ("a", "b"):
        result = run_train(args, tmp_path / name, cache_dir)
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(read_metrics(tmp_path / name))
    for m in runs:
        m.pop("train_time_s")
    assert runs[0] == runs[1]
    assert runs[0]["seed"] == 3


BAD_INPUTS = [
    (["optimizer=adamm"], 2, "error: optimizer=adamm is not an option of optimizer: choose one"),
    (["model=resnet50"], 2, "error: model=resnet50 is not an option of model: choose one of"),
    (["optimizer.lr=-0.1"], 2, "error: optimizer.lr=-0.1 is invalid: must be > 0"),
    (["optimizer.lr=0"], 2, "error: optimizer.lr=0 is invalid"),
    (["data.batch_size=0"], 2, "error: data.batch_size=0 is invalid: must be >= 1"),
    (["trainer.max_epochs=0"], 2, "error: trainer.max_epochs=0 is invalid"),
    (["data.val_fraction=1.5"], 2, "error: data.val_fraction=1.5 is invalid: must be in (0, 1)"),
    (
        ["optimizer=momentum", "optimizer.momentum=1.5"],
        2,
        "error: optimizer.momentum=1.5 is invalid",
    ),
    (["optimizer.betas=[0.9,1.2]"], 2, "error: optimizer.betas=[0.9, 1.2] is invalid"),
    (["+optimizer.foo=1"], 2, "error: optimizer: "),
    (
        ["scheduler=step", "scheduler.gamma=oops"],
        2,
        "error: scheduler.gamma=oops is invalid: must be a number",
    ),
    (["optimizer.eps=abc"], 2, "error: optimizer.eps=abc is invalid"),
    (["scheduler=onecycle", "+scheduler.bogus=1"], 2, "error: scheduler: "),
    (["data.eval_batch_size=0"], 2, "error: data.eval_batch_size=0 is invalid: must be >= 1"),
    (["data.val_fraction=0"], 2, "error: data.val_fraction=0 is invalid"),
    (["optimizer=adadelta", "optimizer.rho=1.5"], 2, "error: optimizer.rho=1.5 is invalid"),
    (["optimizer=rmsprop", "optimizer.alpha=1.0"], 2, "error: optimizer.alpha=1.0 is invalid"),
    (["optimizer.weight_decay=-0.01"], 2, "error: optimizer.weight_decay=-0.01 is invalid"),
    (["seed=-1"], 2, "error: seed=-1 is invalid: must be an integer >= 0"),
    (["seed=abc"], 2, "error: seed=abc is invalid"),
    (["trainer.max_epochs=abc"], 2, "error: trainer.max_epochs=abc is invalid"),
    (
        ["module.divergence_factor=0.5"],
        2,
        "error: module.divergence_factor=0.5 is invalid: must be > 1 or null",
    ),
    # A misspelled key, named with the closest key before any folder is made; in a sweep, on
    # its first job.
    (
        ["trainer.max_epohs=3"],
        2,
        "error: trainer.max_epohs=3: trainer.max_epohs is not a key of the config (did you "
        "mean trainer.max_epochs?); to add a new key, write +trainer.max_epohs=3",
    ),
    (
        ["-m", "seed=0,1", "optimizer.lrr=0.1,0.01"],
        2,
        "error: optimizer.lrr=0.1: optimizer.lrr is not a key of the config (did you mean "
        "optimizer.lr?)",
    ),
]
# Refused when the run builds its parts, after validation: the model for the data's shape, the
# diagnostics callback.
WHEN_BUILT = [
    (["model=lenet5", "model.padding=0"], 2, "error: the model cannot take 1×8×8 inputs"),
    (
        ["callbacks.diagnostics.interval=0"],
        2,
        "error: callbacks.diagnostics.interval=0 is invalid: must be an integer >= 1",
    ),
]
# Through train.py as a user runs it: an unknown option, a value validation refuses, a
# library's own check (an argument the scheduler does not take), a misspelled key in a sweep,
# and those refused when built.
FROM_THE_COMMAND_LINE = [BAD_INPUTS[0], BAD_INPUTS[2], BAD_INPUTS[12], BAD_INPUTS[-1], *WHEN_BUILT]


@pytest.mark.parametrize(("overrides", "code", "message"), BAD_INPUTS, ids=lambda v: str(v))
def test_bad_input_is_refused_with_one_line(capsys, overrides, code, message):
    """What train.py runs before any training, in this process: its command-line checks,
    Hydra's composition and the validation, behind the same error handling."""

    def refuse() -> None:
        cli.check_command_line(overrides)
        validate(cli.compose(overrides)[0])

    with pytest.raises(SystemExit) as exit_info:
        cli.guarded(refuse)
    stderr = capsys.readouterr().err
    assert exit_info.value.code == code
    assert stderr.startswith(message) and len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize(("overrides", "code", "message"), FROM_THE_COMMAND_LINE, ids=str)
def test_bad_input_fails_before_training(tmp_path, cache_dir, overrides, code, message):
    run_dir = tmp_path / "run"
    data = [] if "model.padding=0" not in overrides else ["data=digits"]
    sweep = [f"hydra.sweep.dir={run_dir}"] if "-m" in overrides else []
    result = run_train([*overrides, *data, *sweep], run_dir, cache_dir)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if code == 2:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "checkpoints").exists()
    if sweep:
        assert not run_dir.exists()  # refused before the sweep made its folder


def test_missing_data_is_one_clear_error(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = run_train(
        ["data=mnist", "data.source.download=false", f"paths.data_dir={tmp_path}/none"],
        run_dir,
        cache_dir,
    )
    assert result.returncode == 2
    assert (
        result.stderr.startswith("error: mnist not found")
        and f"{tmp_path}/none/mnist" in result.stderr
    )
    assert not (run_dir / "metrics.json").exists()


def test_unwritable_run_directory(tmp_path, cache_dir):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_train(["data=digits"], blocker / "run", cache_dir)
    assert result.returncode != 0
    assert (
        result.stderr.startswith("error: cannot create the run directory")
        and "Traceback" not in result.stderr
    )


def test_metrics_json_is_strict_json_of_plain_values_under_the_documented_keys(fashion_run):
    metrics = read_metrics(fashion_run)  # strict: NaN or Infinity would be an error
    documented = {"status", "best_val_acc", "final_val_acc", "test_acc", "epochs", "steps"}
    documented |= {"train_time_s", "seed", "lr", "optimizer", "scheduler", "model", "data"}
    documented |= {"augment", "final_val_loss", "final_train_loss", "test_loss"}
    documented |= {"torch_threads", "peak_gpu_memory_mb", "group"}
    assert set(metrics) == documented
    assert all(type(v) in (str, int, float, type(None)) for v in metrics.values()), metrics
    assert type(metrics["epochs"]) is type(metrics["steps"]) is int

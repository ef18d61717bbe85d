"""Documented training features, each shown working in a real run (an MLP on the bundled
digits, through :func:`optstudy.run.train`, what ``train.py`` calls): early stopping ends a
run, ``scheduler=plateau`` lowers the lr, gradient clipping bounds the gradient the step uses
(and ``grad_norm`` reports it after clipping), ``best.ckpt`` holds the weights of the epoch
with the highest ``val_acc``."""

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from test_train_data_sets import train_in_process

from optstudy.cli import compose
from optstudy.data import build_datamodule

# 20 steps of 64 images an epoch.
DIGITS = ["data=digits", "model=mlp"]


def history(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv")


@pytest.mark.parametrize("patience", [1, 2])
def test_early_stopping_ends_the_run_after_patience_epochs_without_improvement(
    tmp_path, cache_dir, patience
):
    """With ``min_delta`` larger than any loss change, no epoch after the first improves
    ``val_loss``: the run stops ``patience`` epochs later instead of training all 10."""
    args = [*DIGITS, "callbacks=early_stopping", "trainer.max_epochs=10"]
    args += [f"callbacks.early_stopping.patience={patience}"]
    args += ["callbacks.early_stopping.min_delta=100.0"]
    metrics = train_in_process(args, tmp_path / "run", cache_dir)
    assert (metrics["status"], metrics["epochs"]) == ("completed", patience + 1)
    assert metrics["steps"] == 20 * (patience + 1)
    assert history(tmp_path / "run")["epoch"].tolist() == list(range(patience + 1))


def test_plateau_schedule_lowers_the_lr_when_val_loss_stops_improving(tmp_path, cache_dir):
    """``threshold=0.9``: only a 90% drop of ``val_loss`` counts as an improvement, and with
    ``patience=0`` every epoch without one multiplies the lr by ``factor`` (0.1)."""
    args = [*DIGITS, "optimizer=sgd", "optimizer.lr=0.1", "scheduler=plateau"]
    args += ["scheduler.patience=0", "scheduler.threshold=0.9", "trainer.max_epochs=4"]
    metrics = train_in_process(args, tmp_path / "run", cache_dir)
    rows = history(tmp_path / "run")
    losses = rows["val_loss"].tolist()
    assert all(later > 0.1 * losses[0] for later in losses[1:])  # no 90% drop
    # The lr an epoch starts with: epoch 0 sets the best loss, each later one lowers the lr.
    assert rows["lr"].tolist() == pytest.approx([0.1, 0.1, 0.01, 0.001], rel=1e-12)
    assert metrics["status"] == "completed"


@pytest.fixture(scope="module")
def clipped_runs(tmp_path_factory, cache_dir):
    """The whole-model diagnostics rows of every step of a run with ``gradient_clip_val=0.05``,
    and the first step's gradient norm of the same run without clipping."""
    tmp = tmp_path_factory.mktemp("clipping")
    args = [*DIGITS, "optimizer=sgd", "optimizer.lr=0.1", "trainer.max_epochs=1"]
    args += ["callbacks.diagnostics.interval=1"]
    unclipped = train_in_process([*args, "trainer.limit_train_batches=1"], tmp / "free", cache_dir)
    clipped = train_in_process([*args, "trainer.gradient_clip_val=0.05"], tmp / "run", cache_dir)
    assert unclipped["status"] == clipped["status"] == "completed"

    def whole_model(run):
        rows = pd.read_csv(tmp / run / "diagnostics.csv")
        return rows[rows["layer"] == "all"].set_index("step")

    return whole_model("run"), whole_model("free")["grad_norm"][0]


def test_gradient_clipping_bounds_the_gradient_the_step_uses(clipped_runs):
    """``trainer.gradient_clip_val`` rescales the gradient to that global norm before the step:
    SGD moves the weights by lr × 0.05 at every step."""
    rows, natural = clipped_runs
    assert natural > 10 * 0.05  # the same first step without clipping: far above the limit
    assert rows.index.tolist() == list(range(20))
    # torch scales by 0.05 / (norm + 1e-6); the norms are taken in float32: rel 1e-5.
    assert rows["update_norm"].tolist() == pytest.approx([0.1 * 0.05] * 20, rel=1e-5)


def test_grad_norm_is_the_gradient_before_clipping(clipped_runs):
    """``grad_norm`` is the backpropagated gradient (Lightning's ``on_before_optimizer_step``
    comes before it clips): the clipped run's first step reads the unclipped run's norm (same
    weights, same batch), far above the 0.05 the step was clipped to."""
    rows, natural = clipped_runs
    assert rows["grad_norm"][0] == pytest.approx(natural, rel=1e-6)  # float32 norms, same order
    assert (rows["grad_norm"] > 0.05).all()


def _val_acc(cfg, checkpoint) -> float:
    """Accuracy on the run's validation split of the network weights in ``checkpoint``,
    computed here by hand (not by the run's own validation loop)."""
    net = instantiate(cfg.model)
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k[:4] == "net."})
    datamodule = build_datamodule(cfg.data, cfg.seed)
    datamodule.setup("fit")
    correct = total = 0
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            images, labels = datamodule.on_after_batch_transfer(batch, 0)
            correct += int((net(images).argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


def test_best_checkpoint_holds_the_weights_of_the_best_validation_epoch(tmp_path, cache_dir):
    """The lr grows tenfold each epoch (0.05, 0.5, 5): the last epoch wrecks the model, so the
    best epoch is an earlier one and best.ckpt must differ from last.ckpt."""
    args = [*DIGITS, "optimizer=sgd", "optimizer.lr=0.05", "scheduler=exponential"]
    args += ["scheduler.gamma=10", "module.divergence_factor=null", "trainer.max_epochs=3"]
    args += [f"paths.cache_dir={cache_dir}"]
    run_dir = tmp_path / "run"
    metrics = train_in_process(args, run_dir, cache_dir)
    accs = history(run_dir)["val_acc"]
    best_epoch = int(accs.idxmax())
    assert best_epoch < 2 and accs[2] < accs[best_epoch] - 0.2
    checkpoints = run_dir / "checkpoints"
    assert torch.load(checkpoints / "best.ckpt", weights_only=True)["epoch"] == best_epoch
    cfg, _ = compose(args, run_dir)
    # One image of the 216 is 0.0046: the two computations count the same images.
    assert _val_acc(cfg, checkpoints / "best.ckpt") == pytest.approx(accs.max(), abs=1e-6)
    assert _val_acc(cfg, checkpoints / "last.ckpt") == pytest.approx(accs[2], abs=1e-6)
    assert metrics["best_val_acc"] == pytest.approx(accs.max())

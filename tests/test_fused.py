"""Fused groups (``launcher.mode=vmap``): members trained at once with stacked weights end as
their standalone runs do, each in its own run directory.

Tolerances: a fused member computes its standalone run's arithmetic, but ``vmap`` batches the
members' matrix products, so float32 sums are added in another order (about 1e-7 relative per
operation). Over the first steps that keeps weights and losses within 1e-5; adaptive optimizers
divide by √v and amplify such differences later, so longer runs are compared where they do not
(plain SGD) or by their results.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import CONF, OPTIMIZERS, read_metrics
from omegaconf import OmegaConf

from optstudy.cli import compose
from optstudy.errors import ConfigError
from optstudy.fused.fusable import why_not_fused
from optstudy.fused.group import own_checkpoint, train_group, train_splitting
from optstudy.fused.member import MemberRun
from optstudy.fused.optimizer import member_optimizer, member_param, step_members
from optstudy.module import ImageClassifier
from optstudy.optim import optimizer_factory
from optstudy.run import train

# The optimizers whose configs say their update is elementwise and linear in lr.
FUSABLE = [n for n in OPTIMIZERS if OmegaConf.load(CONF / "optimizer" / f"{n}.yaml").fusable]
QUIET = ["callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]
# Three optimizer steps, one validation and one test batch: the first steps of a run.
FIRST_STEPS = [
    "data=digits",
    "model=mlp",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]
# Small RGB images (the pre-trained VGG16 base takes 3 channels).
SMALL_RGB = ["data=synthetic", "data.image_size=[8,8]", "data.source.train_size=1000"]
SMALL_RGB.append("data.source.test_size=200")
FIRST_STEPS_TOLERANCE = 1e-5  # float reordering only (module docstring)
NOT_COMPARED = ("train_time_s", "group")  # wall time; and a standalone run has no group


def member(args: list[str], out_dir: Path, cache: Path) -> MemberRun:
    """A member's run: its config composed as ``train.py`` would, resolved."""
    cfg, choices = compose([*QUIET, f"paths.cache_dir={cache}", *args], out_dir)
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    return MemberRun(resolved, Path(out_dir), choices)


def fused_and_alone(
    tmp: Path, cache: Path, common: list[str], each: list[list[str]]
) -> tuple[list[dict], list[dict], list[MemberRun]]:
    """Train the members ``each`` (plus ``common``) as one fused group, and each on its own;
    return both metrics and the fused members' runs."""
    runs = [member([*common, *own], tmp / "fused" / f"m{i}", cache) for i, own in enumerate(each)]
    fused = train_group(runs, tmp / "fused", group_id=0)
    alone = []
    for i, own in enumerate(each):
        run = member([*common, *own], tmp / "alone" / f"m{i}", cache)
        alone.append(train(run.cfg, run.out_dir, run.choices))
    return fused, alone, runs


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The network weights of a run's last checkpoint."""
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("net.")}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def without(metrics: dict, *keys: str) -> dict:
    return {k: v for k, v in metrics.items() if k not in keys}


def history(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv").drop(columns="elapsed_s")


def assert_close_metrics(fused: dict, alone: dict, rel: float) -> None:
    for key, value in without(alone, *NOT_COMPARED).items():
        if isinstance(value, float):
            assert fused[key] == pytest.approx(value, rel=rel, abs=rel), key
        else:
            assert fused[key] == value, key


# -- the optimizer rule ---------------------------------------------------------------------


@pytest.mark.parametrize("name", FUSABLE)
def test_one_optimizer_at_lr_1_scaled_per_member_is_each_members_own_optimizer(name):
    """The rule on bare tensors: 3 members × 2 param groups stepped as one optimizer with
    lr = 1 and each member's update scaled by its lr give each member's own torch optimizer's
    parameters and state (float64: only the rule is tested, not rounding)."""
    cfg, _ = compose([f"optimizer={name}", "optimizer.weight_decay=0.01"])
    factory = optimizer_factory(cfg.optimizer)
    generator = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (4,)]
    stacked = [torch.randn(3, *s, generator=generator, dtype=torch.float64) for s in shapes]
    own = [[t[m].clone().requires_grad_() for t in stacked] for m in range(3)]
    stacked = [t.requires_grad_() for t in stacked]
    lrs = torch.tensor([[1.0, 0.5], [3.0, 1.5], [0.25, 0.1]], dtype=torch.float64)
    lrs *= factory.keywords["lr"]
    fused = factory(
        [{"params": [stacked[0]]}, {"params": [stacked[1]], "weight_decay": 0.0}], lr=1.0
    )
    alone = [
        factory(
            [
                {"params": [p[0]], "lr": float(lrs[m, 0])},
                {"params": [p[1]], "lr": float(lrs[m, 1]), "weight_decay": 0.0},
            ]
        )
        for m, p in enumerate(own)
    ]
    for _ in range(4):
        grads = [torch.randn(t.shape, generator=generator, dtype=torch.float64) for t in stacked]
        for t, g in zip(stacked, grads, strict=True):
            t.grad = g.clone()
        step_members(fused, lambda: lrs)
        for m, optimizer in enumerate(alone):
            for p, g in zip(own[m], grads, strict=True):
                p.grad = g[m].clone()
            optimizer.step()
    for m in range(3):
        for t, p in zip(stacked, own[m], strict=True):
            torch.testing.assert_close(t[m], p, rtol=1e-12, atol=1e-12)
        # The member's slice of the state is its own optimizer's state (the diagnostics read it).
        views = {id(t): member_param(t, m) for t in stacked}
        view = member_optimizer(fused, m, views, lrs[m].tolist())
        for t, p in zip(stacked, own[m], strict=True):
            mine, theirs = view.state[views[id(t)]], alone[m].state[p]
            assert mine.keys() == theirs.keys()
            for key in mine:
                torch.testing.assert_close(torch.as_tensor(mine[key]), torch.as_tensor(theirs[key]))


def test_a_frozen_member_keeps_its_weights_exactly():
    param = torch.ones(2, 3, requires_grad=True)
    param.grad = torch.full((2, 3), math.inf)  # even a non-finite update leaves it as it was
    optimizer = torch.optim.SGD([param], lr=1.0)
    step_members(optimizer, lambda: torch.tensor([[0.0], [0.5]]))
    assert torch.equal(param[0], torch.ones(3)) and not torch.isfinite(param[1]).any()


# -- fused members against their standalone runs -----------------------------------------------


@pytest.mark.parametrize("name", FUSABLE)
def test_each_optimizer_trains_three_members_as_their_standalone_runs(name, tmp_path, cache_dir):
    cfg, _ = compose([f"optimizer={name}"])
    lr = cfg.optimizer.lr
    each = [["seed=0", f"optimizer.lr={lr}"], ["seed=1", f"optimizer.lr={lr * 3}"]]
    each.append(["seed=2", f"optimizer.lr={lr / 2}"])
    common = [*FIRST_STEPS, f"optimizer={name}", "callbacks.diagnostics.interval=2"]
    fused, alone, runs = fused_and_alone(tmp_path, cache_dir, common, each)
    for run, mine, theirs in zip(runs, fused, alone, strict=True):
        other = tmp_path / "alone" / run.out_dir.name
        assert max_difference(weights(run.out_dir), weights(other)) < FIRST_STEPS_TOLERANCE
        assert_close_metrics(mine, theirs, FIRST_STEPS_TOLERANCE)
        assert mine["group"] == {"id": 0, "size": 3, "mode": "vmap", "member": runs.index(run)}
        # The optimizer diagnostics read the member's slice of the fused optimizer's state.
        ours, standalone = (pd.read_csv(d / "diagnostics.csv") for d in (run.out_dir, other))
        assert list(ours.layer) == list(standalone.layer) and list(ours.step) == [0] * 3 + [2] * 3
        pd.testing.assert_frame_equal(ours, standalone, rtol=1e-4, atol=1e-7)


def test_sgd_members_follow_their_standalone_losses_and_a_group_repeats_exactly(
    tmp_path, cache_dir
):
    """Plain SGD amplifies rounding far less than Adam: three epochs of two members end with
    their standalone runs' losses and accuracies; the same group trained again (another
    process state, same configs) gives identical numbers."""
    common = ["data=digits", "model=mlp", "optimizer=sgd", "trainer.max_epochs=3"]
    common += ["trainer.limit_train_batches=10", "callbacks.diagnostics=null"]
    each = [["seed=0", "optimizer.lr=0.05"], ["seed=3", "optimizer.lr=0.2"]]
    fused, alone, runs = fused_and_alone(tmp_path, cache_dir, common, each)
    for run, mine, theirs in zip(runs, fused, alone, strict=True):
        assert_close_metrics(mine, theirs, 1e-5)
        standalone = history(tmp_path / "alone" / run.out_dir.name)
        pd.testing.assert_frame_equal(history(run.out_dir), standalone, rtol=1e-5)
    again = [
        member([*common, *own], tmp_path / "again" / f"m{i}", cache_dir)
        for i, own in enumerate(each)
    ]
    repeated = train_group(again, tmp_path / "again", group_id=0)
    for first, second, a, b in zip(fused, repeated, runs, again, strict=True):
        assert without(first, "train_time_s") == without(second, "train_time_s")
        pd.testing.assert_frame_equal(history(a.out_dir), history(b.out_dir))


def test_a_diverging_member_is_frozen_and_written_as_diverged_while_the_others_go_on(
    tmp_path, cache_dir
):
    common = ["data=digits", "model=mlp", "optimizer=sgd", "trainer.max_epochs=2"]
    common += ["trainer.limit_train_batches=5", "callbacks.diagnostics=null"]
    each = [["seed=0", "optimizer.lr=0.05"], ["seed=1", "optimizer.lr=1e6"]]
    fused, alone, _ = fused_and_alone(tmp_path, cache_dir, common, each)
    assert [m["status"] for m in fused] == ["completed", "diverged"]
    assert fused[1]["epochs"] == 0 and fused[1]["test_acc"] is None
    assert fused[0]["epochs"] == 2 and fused[0]["steps"] == 10
    for mine, theirs in zip(fused, alone, strict=True):
        assert_close_metrics(mine, theirs, 1e-5)


def test_plateau_and_early_stopping_act_per_member(tmp_path, cache_dir):
    """Member 0 cuts its lr tenfold after every epoch that does not halve its validation loss
    and never stops early; member 1 keeps its lr and stops after its second epoch (no change
    counts as an improvement with min_delta 10)."""
    common = ["data=digits", "model=mlp", "optimizer=sgd", "optimizer.lr=0.05"]
    common += ["trainer.max_epochs=4", "trainer.limit_train_batches=5", "scheduler=plateau"]
    common += ["callbacks=early_stopping", "callbacks.diagnostics=null"]
    each = [
        ["seed=0", "scheduler.patience=0", "scheduler.threshold=0.5"],
        [
            "seed=1",
            "scheduler.patience=100",
            "callbacks.early_stopping.min_delta=10",
            "callbacks.early_stopping.patience=1",
        ],
    ]
    fused, alone, runs = fused_and_alone(tmp_path, cache_dir, common, each)
    assert [m["epochs"] for m in fused] == [4, 2]
    lrs = [list(history(run.out_dir).lr) for run in runs]
    assert lrs[0] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    assert lrs[1] == [0.05, 0.05]
    for run, mine, theirs in zip(runs, fused, alone, strict=True):
        assert_close_metrics(mine, theirs, 1e-5)
        standalone = history(tmp_path / "alone" / run.out_dir.name)
        pd.testing.assert_frame_equal(history(run.out_dir), standalone, rtol=1e-5)


@pytest.mark.parametrize(
    "model",
    [
        # batch norm with each member's own statistics, and each member's own augmentation
        ["model=fast_cifar", "optimizer=sgd", "augment=flip_crop"],
        # batch norm, then dropout (each member's own masks)
        ["model=vgg_small", "model.stages=[[8],[16]]", "model.hidden=32", "optimizer=momentum"],
        # a frozen pre-trained base (RGB), then batch norm and dropout; slow: checkpoints of
        # the 15M-parameter base, per member and for the group
        pytest.param(
            ["model=vgg16_transfer", "model.weights={weights}", "optimizer=momentum", *SMALL_RGB],
            marks=pytest.mark.slow,
        ),
    ],
    ids=["fast_cifar", "vgg_small", "vgg16_transfer"],
)
def test_batch_norm_dropout_and_augmentation_members_are_their_standalone_runs(
    model, tmp_path, cache_dir, vgg16_weights_file
):
    model = [o.format(weights=vgg16_weights_file) for o in model]
    common = [*FIRST_STEPS, *model, "callbacks.diagnostics=null"]
    fused, alone, runs = fused_and_alone(tmp_path, cache_dir, common, [["seed=0"], ["seed=1"]])
    for run, mine, theirs in zip(runs, fused, alone, strict=True):
        other = tmp_path / "alone" / run.out_dir.name
        # Batch-norm running statistics are weights of the state dict too.
        assert max_difference(weights(run.out_dir), weights(other)) < FIRST_STEPS_TOLERANCE
        assert_close_metrics(mine, theirs, FIRST_STEPS_TOLERANCE)


def test_channels_last_and_bf16_autocast_train_fused(tmp_path, cache_dir):
    """The GPU settings on the CPU: NHWC weights and batches give the standalone numbers;
    bf16 autocast (8 significant bits, rounded in another order) stays near them."""
    base = [*FIRST_STEPS, "model=lenet5", "module.channels_last=true"]
    base.append("callbacks.diagnostics=null")
    each = [["seed=0"], ["seed=1"]]
    fused, alone, runs = fused_and_alone(tmp_path / "nhwc", cache_dir, base, each)
    for run in runs:
        other = tmp_path / "nhwc" / "alone" / run.out_dir.name
        assert max_difference(weights(run.out_dir), weights(other)) < FIRST_STEPS_TOLERANCE
    bf16 = [*base, "trainer.precision=bf16-mixed"]
    fused, alone, runs = fused_and_alone(tmp_path / "bf16", cache_dir, bf16, each)
    for mine, theirs in zip(fused, alone, strict=True):
        assert mine["status"] == "completed"
        assert mine["final_train_loss"] == pytest.approx(theirs["final_train_loss"], rel=1e-2)


@pytest.mark.slow  # torch.compile of the fused passes takes minutes on a CPU
def test_compiled_fused_members_are_their_standalone_runs(tmp_path, cache_dir):
    common = [*FIRST_STEPS, "module.compile=true", "callbacks.diagnostics=null"]
    fused, alone, runs = fused_and_alone(tmp_path, cache_dir, common, [["seed=0"], ["seed=1"]])
    for run, mine, theirs in zip(runs, fused, alone, strict=True):
        other = tmp_path / "alone" / run.out_dir.name
        assert max_difference(weights(run.out_dir), weights(other)) < FIRST_STEPS_TOLERANCE
        assert_close_metrics(mine, theirs, FIRST_STEPS_TOLERANCE)


def test_a_group_out_of_memory_is_split_in_halves_and_trained(tmp_path, cache_dir, caplog):
    oom = ["+callbacks.oom._target_=helpers.oom.OutOfMemoryAbove", "+callbacks.oom.members=2"]
    runs = [
        member([*FIRST_STEPS, *oom, f"seed={i}"], tmp_path / f"m{i}", cache_dir) for i in range(3)
    ]
    with caplog.at_level(logging.WARNING):
        metrics = train_splitting(runs, tmp_path, group_id=5)
    assert "group 5: out of GPU memory with 3 members; splitting it into 2 + 1" in caplog.text
    assert [(m["group"]["size"], m["group"]["member"]) for m in metrics] == [(2, 0), (2, 1), (1, 0)]
    assert all(m["group"]["mode"] == "vmap" and m["group"]["id"] == 5 for m in metrics)
    # A group of one is fused too, with its own metrics (not a scalar torchmetrics squeezed).
    assert all(m["status"] == "completed" and 0 <= m["test_acc"] <= 1 for m in metrics)


def test_member_checkpoints_load_into_the_standalone_model(tmp_path, cache_dir):
    runs = [member([*FIRST_STEPS, f"seed={i}"], tmp_path / f"m{i}", cache_dir) for i in (0, 1)]
    train_group(runs, tmp_path, group_id=0)
    for run in runs:
        cfg = run.cfg
        from hydra.utils import instantiate

        model = ImageClassifier(
            instantiate(cfg.model), optimizer_factory(cfg.optimizer), cfg.scheduler, 10
        )
        for name in ("last", "best"):
            saved = torch.load(run.out_dir / "checkpoints" / f"{name}.ckpt", weights_only=True)
            model.load_state_dict(saved["state_dict"], strict=True)
        # A run on its own refuses to resume from it, with one line, and is told why.
        assert own_checkpoint(run) is None
        with pytest.raises(ConfigError, match="member of a fused group"):
            train(cfg, run.out_dir, run.choices)


# -- when a group does not train fused ----------------------------------------------------------


def test_groups_that_cannot_train_fused_say_why():
    def reason(*overrides: str) -> str | None:
        return why_not_fused([compose([*o.split()])[0] for o in overrides])

    assert reason("seed=0", "seed=1") is None
    assert "is not fusable" in reason("optimizer.fusable=false")
    assert "DDP" in reason("trainer=ddp_cpu")
    assert "W&B" in reason("logger=wandb")
    assert "cycle_momentum" in reason("scheduler=onecycle scheduler.cycle_momentum=true")
    assert reason("callbacks=early_stopping seed=0", "seed=1") is None  # per member
    unknown = "+callbacks.extra._target_=pytorch_lightning.callbacks.Timer"
    assert reason(unknown, unknown) is None  # the same for all: runs once on the group
    assert "callbacks.extra differs" in reason(unknown, "seed=1")


@pytest.mark.parametrize(
    ("mode", "overrides", "gpu", "expected"),
    [
        ("auto", [], False, "sequential"),  # measured: fusing is slower on a CPU
        ("auto", [], True, "vmap"),
        ("auto", ["trainer=cpu"], True, "sequential"),  # a CPU trainer on a GPU machine
        ("auto", ["optimizer=muon"], True, "sequential"),  # not fusable
        ("vmap", [], False, "vmap"),
        ("sequential", [], True, "sequential"),
    ],
)
def test_auto_picks_vmap_only_where_a_gpu_trains(mode, overrides, gpu, expected, monkeypatch):
    """The launcher's choice per group (the GPU's presence stubbed: no GPU in CI)."""
    from hydra_plugins.optstudy_grouped_launcher.grouped_launcher import GroupedLauncher
    from optstudy.grouping import Group

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    members = [compose([*overrides, f"seed={seed}"])[0] for seed in (0, 1)]
    assert GroupedLauncher(mode=mode)._mode(Group(0, (0, 1)), members) == expected


# -- launcher=grouped launcher.mode=vmap ----------------------------------------------------

VMAP = ["launcher.mode=vmap"]
SWEEP = ["data=digits", "model=mlp", "optimizer=adam", "trainer.max_epochs=2", "seed=0,1,2"]


@pytest.fixture(scope="module")
def vmap_sweep(tmp_path_factory, cache_dir):
    from test_grouped import sweep

    sweep_dir = tmp_path_factory.mktemp("vmap") / "sweep"
    result = sweep([*VMAP, *SWEEP], sweep_dir, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir, result


def test_a_vmap_sweep_writes_each_members_run_directory(vmap_sweep, tmp_path):
    from test_grouped import members

    from optstudy.artifacts import DIAGNOSTICS_COLUMNS, HISTORY_COLUMNS
    from optstudy.report import main as report_main

    sweep_dir, result = vmap_sweep
    log = result.stdout + result.stderr
    assert "group 0: 3 members train fused (vmap)" in log
    assert "progress: 3/3 runs done" in log  # the group's members finish together
    runs = members(sweep_dir)
    assert [p.name for p in runs] == [f"{i}-adam-constant-s{i}" for i in range(3)]
    for number, run in enumerate(runs):
        metrics = read_metrics(run)
        assert metrics["group"] == {"id": 0, "size": 3, "mode": "vmap", "member": number}
        assert metrics["status"] == "completed" and metrics["epochs"] == 2
        assert metrics["seed"] == number and metrics["steps"] == 40
        assert {"config.yaml", "hydra.yaml", "overrides.yaml"} <= {
            p.name for p in (run / ".hydra").iterdir()
        }
        assert f"seed={number}" in (run / ".hydra" / "overrides.yaml").read_text()
        assert tuple(pd.read_csv(run / "history.csv").columns) == HISTORY_COLUMNS
        assert tuple(pd.read_csv(run / "diagnostics.csv").columns) == DIAGNOSTICS_COLUMNS
        assert {"best.ckpt", "last.ckpt"} <= {p.name for p in (run / "checkpoints").iterdir()}
        for name in ("run_info.json", "classes.json", "train.log", "csv/metrics.csv"):
            assert (run / name).is_file(), name
        assert "train_loss" in pd.read_csv(run / "csv" / "metrics.csv").columns
    assert report_main([str(sweep_dir), "--out", str(tmp_path / "report")]) == 0
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert list(summary.runs) == [3] and list(summary.diverged) == [0]


def test_sigterm_stops_a_fused_group_and_the_same_command_resumes_it(
    vmap_sweep, tmp_path, cache_dir
):
    from test_grouped import WITH_HELPERS, members, sweep

    kill = ["+callbacks.kill._target_=helpers.sigterm_at.SigtermAt", "+callbacks.kill.step=27"]
    args = [*VMAP, *SWEEP, *kill]  # step 27: in the middle of the second epoch (20 a epoch)
    first = sweep(args, tmp_path, cache_dir, env=WITH_HELPERS)
    assert first.returncode == 143, first.stderr[-3000:]
    assert "interrupted: SIGTERM at step 27" in first.stderr
    assert not any((run / "metrics.json").exists() for run in members(tmp_path))
    assert list((tmp_path / "fused_groups").glob("*/interrupted.ckpt"))
    second = sweep(args, tmp_path, cache_dir, env=WITH_HELPERS)
    assert second.returncode == 0, second.stderr[-3000:]
    reference, _ = vmap_sweep
    for again, uninterrupted in zip(members(tmp_path), members(reference), strict=True):
        assert without(read_metrics(again), "train_time_s") == without(
            read_metrics(uninterrupted), "train_time_s"
        )
        pd.testing.assert_frame_equal(history(again), history(uninterrupted))
    assert not list((tmp_path / "fused_groups").glob("*/interrupted.ckpt"))


def test_a_group_whose_optimizer_is_not_fusable_trains_sequentially(tmp_path, cache_dir):
    from test_grouped import members, sweep

    args = [*VMAP, *FIRST_STEPS, "optimizer=muon", "seed=0,1"]  # Muon: whole matrices
    result = sweep(args, tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "group 0 trains sequentially: optimizer pytorch_optimizer.Muon is not fusable" in log
    assert [read_metrics(run)["group"]["mode"] for run in members(tmp_path)] == ["sequential"] * 2

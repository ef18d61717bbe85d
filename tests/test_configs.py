"""Every optimizer × scheduler config builds, steps, and follows its documented rule."""

import math
from pathlib import Path

import pytest
import torch
from conftest import CONF
from torch import nn

from optstudy.cli import compose
from optstudy.optim import build_optimizer, build_scheduler, optimizer_factory

OPTIMIZERS = sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml"))
SCHEDULERS = sorted(p.stem for p in (CONF / "scheduler").glob("*.yaml"))


def test_every_required_choice_exists():
    assert set(OPTIMIZERS) >= {
        "sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop",
        "adam", "adamw", "nadam", "radam", "adamax",
    }  # fmt: skip
    assert set(SCHEDULERS) >= {
        "constant", "step", "multistep", "exponential", "exponential_staircase",
        "exp_formula", "cosine", "warmup_cosine", "onecycle", "plateau",
    }  # fmt: skip


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optimizer_and_scheduler_build_and_step(optimizer, scheduler):
    cfg, _ = compose([f"optimizer={optimizer}", f"scheduler={scheduler}"])
    model = _model()
    opt = build_optimizer(optimizer_factory(cfg.optimizer), model, cfg.module.decay_norm_and_bias)
    sched = build_scheduler(cfg.scheduler, opt, {"step": 20, "epoch": 5})
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        args = (1.0,) if sched.get("monitor") else ()
        sched["scheduler"].step(*args)
    assert all(math.isfinite(g["lr"]) and g["lr"] > 0 for g in opt.param_groups)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert sched["interval"] in ("step", "epoch")


def _lrs(scheduler: str, overrides: list[str], n: int, total: dict) -> list[float]:
    cfg, _ = compose([f"scheduler={scheduler}", *overrides])
    opt = build_optimizer(optimizer_factory(cfg.optimizer), _model(), True)
    sched = build_scheduler(cfg.scheduler, opt, total)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    return lrs


def test_exponential_staircase_is_e1_keras_decay():
    lrs = _lrs(
        "exponential_staircase",
        ["optimizer=adam", "optimizer.lr=1e-4"],
        200,
        {"step": 200, "epoch": 1},
    )
    expected = [1e-4 * 0.96 ** (t // 60) for t in range(200)]
    assert lrs == pytest.approx(expected, rel=1e-9)
    cfg, _ = compose(["scheduler=exponential_staircase"])
    assert cfg.scheduler.lightning.interval == "step"


def test_exp_formula_is_e3_schedule():
    lrs = _lrs("exp_formula", ["optimizer=sgd", "optimizer.lr=0.1"], 10, {"step": 100, "epoch": 10})
    assert lrs == pytest.approx([0.1 * math.exp(-0.1 * e) for e in range(10)], rel=1e-9)


def test_step_schedules_span_the_whole_run():
    total = {"step": 100, "epoch": 4}
    warm = _lrs("warmup_cosine", ["optimizer=sgd", "optimizer.lr=0.1"], 100, total)
    assert warm[0] == pytest.approx(0.1 / 5)  # 5% of 100 steps warm-up
    assert max(warm) == pytest.approx(0.1)
    assert warm[-1] < 0.001
    one = _lrs("onecycle", ["optimizer=sgd"], 100, total)
    assert one[0] == pytest.approx(0.01 / 25)
    assert max(one) == pytest.approx(0.01, rel=1e-3)
    assert one.index(max(one)) == pytest.approx(30, abs=1)


def test_cosine_reaches_eta_min_at_max_epochs():
    lrs = _lrs(
        "cosine",
        ["optimizer=sgd", "optimizer.lr=0.1", "trainer.max_epochs=4"],
        5,
        {"step": 1, "epoch": 4},
    )
    assert (
        lrs[0] == pytest.approx(0.1)
        and lrs[2] == pytest.approx(0.05)
        and lrs[4] == pytest.approx(0.0, abs=1e-12)
    )


def test_plateau_monitors_validation_loss():
    cfg, _ = compose(["scheduler=plateau"])
    opt = build_optimizer(optimizer_factory(cfg.optimizer), _model(), True)
    built = build_scheduler(cfg.scheduler, opt, {"step": 10, "epoch": 10})
    assert built["monitor"] == "val_loss" and built["interval"] == "epoch"


def test_weight_decay_can_skip_biases_and_norm_weights():
    cfg, _ = compose(["optimizer=adamw", "module.decay_norm_and_bias=false"])
    opt = build_optimizer(
        optimizer_factory(cfg.optimizer), _model(), cfg.module.decay_norm_and_bias
    )
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])
    assert len(plain["params"]) == 4  # two linear biases + BatchNorm weight and bias


def test_optimizer_defaults_are_the_library_defaults():
    import inspect

    from optstudy.optim.build import RESERVED_KEYS

    for name in OPTIMIZERS:
        cfg, _ = compose([f"optimizer={name}"])
        target = optimizer_factory(cfg.optimizer).func
        defaults = inspect.signature(target).parameters
        for key, value in cfg.optimizer.items():
            if key.startswith("_") or key in RESERVED_KEYS or (
                name in ("sgd", "momentum", "nesterov") and key in ("lr", "momentum", "nesterov")
            ):
                continue
            if name == "adamw" and key == "weight_decay":
                continue
            default = defaults[key].default
            assert list(value) == list(default) if key == "betas" else value == default, (name, key)


def test_conf_tree_mirrors_the_user_choices():
    groups = {p.name for p in Path(CONF).iterdir() if p.is_dir()}
    assert {"data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger"} <= groups

"""Every optimizer × scheduler config builds and steps; every schedule gives the lr values its
config documents."""

import inspect
import math
from pathlib import Path

import pytest
import torch
from conftest import CONF, NEW_OPTIMIZERS, OPTIMIZERS
from hydra.utils import instantiate
from torch import nn

from optstudy.cli import compose
from optstudy.errors import ConfigError
from optstudy.optim import RESERVED_KEYS, build_scheduler, optimizer_factory, optimizer_from_config
from optstudy.optim.schedule_free import has_modes
from optstudy.validation import validate

SCHEDULERS = sorted(p.stem for p in (CONF / "scheduler").glob("*.yaml"))


def test_every_required_choice_exists():
    assert set(OPTIMIZERS) >= {
        "sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop",
        "adam", "adamw", "nadam", "radam", "adamax", *NEW_OPTIMIZERS,
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
    opt = optimizer_from_config(cfg.optimizer, model, cfg.module.decay_norm_and_bias)
    if has_modes(opt):  # Schedule-Free: steps in train mode (runs refuse its other schedulers)
        opt.train()
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
    opt = optimizer_from_config(cfg.optimizer, _model(), True)
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


# The rule each epoch-wise torch schedule documents in its config file: the lr after t
# scheduler steps, from lr0 = optimizer.lr and the config's own values.
EPOCH_RULES = {
    "constant": lambda s, lr0, t: lr0,
    "step": lambda s, lr0, t: lr0 * s.gamma ** (t // s.step_size),
    "multistep": lambda s, lr0, t: lr0 * s.gamma ** sum(t >= m for m in s.milestones),
    "exponential": lambda s, lr0, t: lr0 * s.gamma**t,
}
# Schedules whose values the tests below check one by one.
CHECKED_ONE_BY_ONE = (
    "exponential_staircase", "exp_formula", "warmup_cosine", "onecycle", "cosine", "plateau"
)  # fmt: skip


def test_every_schedule_has_its_values_checked():
    assert sorted([*EPOCH_RULES, *CHECKED_ONE_BY_ONE]) == SCHEDULERS


@pytest.mark.parametrize("scheduler", sorted(EPOCH_RULES))
def test_epoch_schedule_follows_its_documented_rule(scheduler):
    overrides = ["optimizer=sgd", "optimizer.lr=0.1"]
    lrs = _lrs(scheduler, overrides, 12, {"step": 120, "epoch": 12})
    cfg, _ = compose([f"scheduler={scheduler}", *overrides])
    expected = [EPOCH_RULES[scheduler](cfg.scheduler, 0.1, t) for t in range(12)]
    assert lrs == pytest.approx(expected, rel=1e-12)  # torch multiplies step by step: rounding
    assert len(set(expected)) > 1 or scheduler == "constant"  # 12 epochs reach its decays


def test_plateau_lowers_the_lr_once_the_monitored_loss_stops_improving():
    """ReduceLROnPlateau as configured: watch val_loss; after more than ``patience`` epochs
    without a relative improvement of ``threshold``, multiply the lr by ``factor``."""
    cfg, _ = compose(["scheduler=plateau", "optimizer=sgd", "optimizer.lr=0.1"])
    opt = optimizer_from_config(cfg.optimizer, _model(), True)
    built = build_scheduler(cfg.scheduler, opt, {"step": 10, "epoch": 10})
    assert built["monitor"] == "val_loss" and built["interval"] == "epoch"
    patience, factor = cfg.scheduler.patience, cfg.scheduler.factor
    losses = [1.0, 0.5] + [0.5 * (1 - cfg.scheduler.threshold / 2)] * (patience + 1) + [0.1]
    lrs = []
    for loss in losses:
        built["scheduler"].step(loss)
        lrs.append(opt.param_groups[0]["lr"])
    # Improving epochs keep the lr; improvements below the threshold count as none.
    assert lrs[: 2 + patience] == [0.1] * (2 + patience)
    assert lrs[2 + patience :] == pytest.approx([0.1 * factor] * 2)


def test_weight_decay_can_skip_biases_and_norm_weights():
    cfg, _ = compose(["optimizer=adamw", "module.decay_norm_and_bias=false"])
    opt = optimizer_from_config(cfg.optimizer, _model(), cfg.module.decay_norm_and_bias)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])
    assert len(plain["params"]) == 4  # two linear biases + BatchNorm weight and bias


def test_optimizer_defaults_are_the_library_defaults():
    for name in OPTIMIZERS:
        cfg, _ = compose([f"optimizer={name}"])
        factory = optimizer_factory(cfg.optimizer)
        assert not set(RESERVED_KEYS) & set(factory.keywords), name  # never an argument
        defaults = inspect.signature(factory.func).parameters
        for key, value in factory.keywords.items():
            if (
                name in ("sgd", "momentum", "nesterov") and key in ("lr", "momentum", "nesterov")
            ) or (name in ("adamw", "adam_l2") and key == "weight_decay"):  # adam_l2: E5's λ
                continue
            default = defaults[key].default
            default = list(default) if isinstance(default, tuple) else default
            assert value == default, (name, key)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_says_whether_it_fuses_and_where_to_search(name):
    cfg, _ = compose([f"optimizer={name}"])
    assert isinstance(cfg.optimizer.fusable, bool)
    space = cfg.optimizer.search_space
    low, high = space.lr.low, space.lr.high
    assert space.lr.log and 0 < low < cfg.optimizer.lr < high  # around the default lr
    arguments = inspect.signature(optimizer_factory(cfg.optimizer).func).parameters
    assert set(space) <= set(arguments)
    # Elementwise and linear in lr: the classics, Lion, ADOPT; the others train sequentially.
    assert cfg.optimizer.fusable == (name not in (set(NEW_OPTIMIZERS) - {"lion", "adopt"}))


def test_muon_updates_hidden_matrices_and_adamw_the_rest():
    """LeNet-5: Muon takes both conv kernels (flattened to 2-D) and the two hidden linear
    weights; AdamW, at its own lr, every bias and the output layer."""
    cfg, _ = compose(["optimizer=muon", "optimizer.adamw_lr=0.001", "optimizer.adamw_wd=0.1"])

    torch.manual_seed(0)
    model = instantiate(cfg.model)
    optimizer = optimizer_from_config(cfg.optimizer, model, cfg.module.decay_norm_and_bias)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["use_muon"]: g for g in optimizer.param_groups}
    assert len(optimizer.param_groups) == 2
    assert [names[id(p)] for p in groups[True]["params"]] == [
        "features.0.weight", "features.3.weight", "classifier.0.weight", "classifier.2.weight",
    ]  # fmt: skip
    assert [names[id(p)] for p in groups[False]["params"]] == [
        "features.0.bias", "features.3.bias", "classifier.0.bias", "classifier.2.bias",
        "classifier.4.weight", "classifier.4.bias",
    ]  # fmt: skip
    assert (groups[True]["lr"], groups[False]["lr"]) == (0.02, 0.001)
    # One step: Muon keeps a momentum buffer, AdamW two moments, each for its own parameters.
    images = torch.randn(8, 1, 28, 28)
    nn.functional.cross_entropy(model(images), torch.arange(8)).backward()
    optimizer.step()
    assert all(set(optimizer.state[p]) == {"momentum_buffer"} for p in groups[True]["params"])
    assert all(
        set(optimizer.state[p]) == {"exp_avg", "exp_avg_sq"} for p in groups[False]["params"]
    )
    # Without decay on biases: the output weight stays in a decayed AdamW group of its own.
    split = optimizer_from_config(cfg.optimizer, model, False).param_groups
    assert [(g["use_muon"], len(g["params"]), g["weight_decay"]) for g in split] == [
        (True, 4, 0.0), (False, 1, 0.1), (False, 5, 0.0),
    ]  # fmt: skip


def test_conf_tree_mirrors_the_user_choices():
    groups = {p.name for p in Path(CONF).iterdir() if p.is_dir()}
    assert {"data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger"} <= groups


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.fusable=maybe"], "optimizer.fusable=maybe is invalid: must be true or false"),
        (["optimizer.search_space.lr.low=2"], "optimizer.search_space.lr={'low': 2, 'high': 0.1"),
        (["optimizer.search_space.lr.low=0"], "optimizer.search_space.lr={'low': 0,"),
        (
            ["+optimizer.search_space.bogus={low: 1, high: 2, log: false}"],
            "optimizer.search_space.bogus: the optimizer has no argument bogus",
        ),
        (["optimizer=muon", "optimizer.param_groups.rest=3"], "optimizer.param_groups={"),
        (
            ["optimizer=muon", "+optimizer.param_groups.odd={use_muon: true}"],
            "optimizer.param_groups={",
        ),
        (["optimizer=adafactor", "optimizer.eps=[null,-1]"], "optimizer.eps=[None, -1] is invalid"),
        (
            ["optimizer=schedulefree_sgd", "scheduler=plateau"],
            "SGDScheduleFree is schedule-free: it takes scheduler=constant only",
        ),
    ],
)
def test_the_project_keys_of_an_optimizer_config_are_checked(overrides, message):
    """fusable, search_space and param_groups: one clear message each, before training."""
    cfg, _ = compose(overrides)
    with pytest.raises(ConfigError) as raised:
        validate(cfg)
    assert str(raised.value).startswith(message)

"""Effective step sizes and per-layer step diagnostics, against values computed by hand and
against the updates the optimizers actually make."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from conftest import OPTIMIZERS
from torch import nn

from optstudy.artifacts import DIAGNOSTICS_COLUMNS as COLUMNS
from optstudy.cli import compose
from optstudy.optim import optimizer_from_config
from optstudy.optim.effective_step import (
    effective_steps,
    estimated_step_size,
    group_values,
    rule_for,
)
from optstudy.optim.schedule_free import has_modes
from optstudy.optim.step_diagnostics import measure, quantiles, take_snapshot


def _optimizer(name: str, model: nn.Module, *overrides: str) -> torch.optim.Optimizer:
    cfg, _ = compose([f"optimizer={name}", *overrides])
    optimizer = optimizer_from_config(cfg.optimizer, model, cfg.module.decay_norm_and_bias)
    if has_modes(optimizer):
        optimizer.train()
    return optimizer


class Tiny:
    """A two-layer model with known weights and its optimizer from a config. Layer 0:
    Linear(2→1), weight [1, 2], bias [2]; layer 1: Linear(1→1), weight [0], bias [0]."""

    def __init__(self, optimizer: str, *overrides: str) -> None:
        self.model = nn.Sequential(nn.Linear(2, 1), nn.Linear(1, 1)).double()
        values = ([[1.0, 2.0]], [2.0], [[0.0]], [0.0])
        with torch.no_grad():
            for p, value in zip(self.model.parameters(), values, strict=True):
                p.copy_(torch.tensor(value))
        self.initial = {name: p.detach().clone() for name, p in self.model.named_parameters()}
        self.optimizer = _optimizer(optimizer, self.model, *overrides)
        self.steps = 0

    def step(self, grads, lr_after: float | None = None) -> dict[str, dict]:
        """Set the gradients, step (then set the lr to ``lr_after``, as a scheduler would):
        the step's diagnostics rows by layer."""
        for p, g in zip(self.model.parameters(), grads, strict=True):
            p.grad = torch.tensor(g, dtype=torch.float64)
        params = dict(self.model.named_parameters())
        before = take_snapshot(self.steps, 0, params.items(), self.optimizer)
        self.optimizer.step()
        self.steps += 1
        if lr_after is not None:
            self.optimizer.param_groups[0]["lr"] = lr_after
        rows = measure(before, params, self.initial, self.optimizer)
        return {row["layer"]: row for row in rows}


def _percentiles(row: dict) -> list[float]:
    return [row["eff_step_p10"], row["eff_step_median"], row["eff_step_p90"]]


# Gradients of the first step: layer 0 weight, bias; layer 1 weight, bias.
FIRST = ([[3.0, 4.0]], [1.0], [[2.0]], [0.5])


def test_adagrad_step_diagnostics_by_hand():
    tiny = Tiny("adagrad", "optimizer.lr=0.1")
    # Step 0: G = g² = [9, 16 | 1] and [4 | 0.25]; η = 0.1/√G = [1/30, 1/40 | 1/10], [1/20 | 1/5];
    # every element moves by η·|g| = 0.1.
    rows = tiny.step(FIRST)
    assert list(rows) == ["all", "0", "1"] and list(rows["0"]) == list(COLUMNS)
    first = rows["0"]
    assert (first["step"], first["epoch"], first["distance_from_init"]) == (0, 0, 0.0)
    assert first["grad_norm"] == pytest.approx(math.sqrt(26))
    assert first["param_norm"] == pytest.approx(3.0)
    assert first["update_norm"] == pytest.approx(0.1 * math.sqrt(3))
    assert first["update_ratio"] == pytest.approx(0.1 * math.sqrt(3) / 3)
    # Sorted η of layer 0: [1/40, 1/30, 1/10]; quantiles interpolate between order statistics.
    assert _percentiles(first) == pytest.approx(
        [1 / 40 + 0.2 * (1 / 30 - 1 / 40), 1 / 30, 1 / 30 + 0.8 * (1 / 10 - 1 / 30)]
    )
    whole = rows["all"]
    assert whole["grad_norm"] == pytest.approx(5.5)  # √(26 + 4.25)
    assert whole["update_norm"] == pytest.approx(0.1 * math.sqrt(5))
    # All five η sorted: [1/40, 1/30, 1/20, 1/10, 1/5].
    assert _percentiles(whole) == pytest.approx(
        [1 / 40 + 0.4 * (1 / 30 - 1 / 40), 1 / 20, 1 / 10 + 0.6 * (1 / 5 - 1 / 10)]
    )
    # Step 1: G of layer 0 = [25, 25 | 1]: η = [1/50, 1/50 | 1/10]; layer 1 gets no gradient.
    rows = tiny.step(([[4.0, 3.0]], [0.0], [[0.0]], [0.0]))
    second = rows["0"]
    assert second["step"] == 1
    assert second["distance_from_init"] == pytest.approx(0.1 * math.sqrt(3))
    assert rows["all"]["distance_from_init"] == pytest.approx(0.1 * math.sqrt(5))
    assert second["update_norm"] == pytest.approx(0.1)  # 0.1·[4, 3]/5
    assert rows["1"]["update_norm"] == 0.0 and rows["1"]["grad_norm"] == 0.0
    assert _percentiles(second) == pytest.approx([1 / 50, 1 / 50, 1 / 50 + 0.8 * (1 / 10 - 1 / 50)])
    assert rows["1"]["eff_step_median"] == pytest.approx((1 / 20 + 1 / 5) / 2)  # unchanged G


def test_adam_effective_step_is_bias_corrected():
    """After one Adam step v̂ = g², so η = lr/(|g| + ε): without the correction it would be
    lr/(√(1−β2)·|g|), 31.6× larger."""
    rows = Tiny("adam").step(FIRST)
    assert rows["0"]["eff_step_median"] == pytest.approx(1e-3 / 3)
    assert rows["all"]["eff_step_p90"] == pytest.approx(1e-3 * (1 + 0.6 * (2 - 1)))


def test_sgd_effective_step_is_its_lr_for_every_parameter():
    whole = Tiny("momentum", "optimizer.lr=0.05").step(FIRST)["all"]
    assert _percentiles(whole) == [pytest.approx(0.05)] * 3


def test_the_lr_is_the_one_the_step_used():
    """A scheduler may change the group's lr right after the step; η uses the lr it used."""
    rows = Tiny("adagrad", "optimizer.lr=0.1").step(FIRST, lr_after=1.0)
    assert rows["0"]["eff_step_median"] == pytest.approx(0.1 / 3)


def test_a_non_finite_step_gives_nan_rows_not_an_error():
    rows = Tiny("adam").step(([[math.nan, 1.0]], [math.inf], [[2.0]], [0.5]))
    assert math.isnan(rows["0"]["grad_norm"]) and math.isnan(rows["all"]["update_norm"])
    assert rows["1"]["update_norm"] > 0


@pytest.mark.parametrize("n", [1, 2, 5, 10, 101])
def test_quantiles_are_numpys_linear_quantiles(n):
    values = torch.randn(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    expected = np.quantile(values.numpy(), [0.1, 0.5, 0.9])
    assert quantiles(values) == pytest.approx(expected.tolist())
    assert all(math.isnan(q) for q in quantiles(torch.empty(0)))


def test_every_optimizer_config_has_an_effective_step_rule():
    """A rule, or an explicit "undefined" (Schedule-Free, SOAP); only an optimizer of the
    user's own (here one torch.optim has, ASGD) has none."""
    for name in OPTIMIZERS:
        assert rule_for(Tiny(name).optimizer) is not None, name
    assert (
        rule_for(Tiny("custom", "optimizer._target_=torch.optim.ASGD", "optimizer.lr=1").optimizer)
        is None
    )


def _group(optimizer, param):
    return next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))


def _decayed(optimizer, param, before):
    """AdamW's decoupled decay of the step, θ·lr·λ, which is no part of η·d."""
    group = optimizer.param_groups[0]
    return (
        before * group["lr"] * group["weight_decay"] if type(optimizer).__name__ == "AdamW" else 0
    )


def _bias_corrected_first_moment(optimizer, param, before):
    state, group = optimizer.state[param], _group(optimizer, param)
    step = float(state["step"] if "step" in state else group["step"])
    return state["exp_avg"] / (1 - group["betas"][0] ** step)


def _nesterov_direction(optimizer, param, before):
    """Nesterov SGD steps along g + μ·b, b the momentum buffer after the step."""
    momentum = _group(optimizer, param)["momentum"]
    return before["grad"] + momentum * optimizer.state[param]["momentum_buffer"]


def _nadam_direction(optimizer, param, before):
    """NAdam's Nesterov mix (Dozat 2016, torch's NAdam): (1 − μₜ)/(1 − Πμ)·g +
    μₜ₊₁/(1 − Πμ·μₜ₊₁)·m, with the momentum schedule μₜ = β1·(1 − ½·0.96^(t·ψ))."""
    group, state = _group(optimizer, param), optimizer.state[param]
    beta1, t, psi = group["betas"][0], float(state["step"]), group["momentum_decay"]
    mu, mu_next = (beta1 * (1 - 0.5 * 0.96 ** (k * psi)) for k in (t, t + 1))
    product = float(state["mu_product"])  # Πμ up to this step
    grad_part = (1 - mu) / (1 - product) * before["grad"]
    return grad_part + mu_next / (1 - product * mu_next) * state["exp_avg"]


def _lion_sign(optimizer, param, before):
    beta1 = _group(optimizer, param)["betas"][0]
    momentum = before["state"].get("exp_avg", torch.zeros_like(param))  # zero at first
    return momentum.lerp(before["grad"], 1 - beta1).sign()


def _muon_direction(optimizer, param, before):
    """Muon groups: the orthogonalised Nesterov momentum, by the library's own Newton-Schulz;
    AdamW groups: m̂."""
    group = _group(optimizer, param)
    if not group["use_muon"]:
        return _bias_corrected_first_moment(optimizer, param, before)
    momentum = group["momentum"]
    buffer = before["state"].get("momentum_buffer", torch.zeros_like(param))
    buffer = buffer.lerp(before["grad"], 1 - momentum)
    nesterov = before["grad"].lerp(buffer, momentum)
    orthogonal = type(optimizer)._orthogonalize(group, [nesterov])[0]  # in bfloat16
    return orthogonal.reshape(param.shape).to(param.dtype)


# The direction d each optimizer's step follows, given (optimizer, param, before: the param's
# optimizer state and gradient before the step): Δθ = −η·d. Adadelta's η is not the factor of
# the step it is read after (README): its own test below.
DIRECTIONS = {
    "sgd": lambda o, p, b: b["grad"],
    "momentum": lambda o, p, b: o.state[p]["momentum_buffer"],
    "nesterov": _nesterov_direction,
    "adagrad": lambda o, p, b: b["grad"],
    "rmsprop": lambda o, p, b: b["grad"],
    "adam": _bias_corrected_first_moment,
    "adamw": _bias_corrected_first_moment,
    "adam_l2": _bias_corrected_first_moment,  # m is built on g + λθ: the same rule
    "nadam": _nadam_direction,
    "adamax": _bias_corrected_first_moment,
    "radam": _bias_corrected_first_moment,
    "adafactor": lambda o, p, b: b["grad"],
    "muon": _muon_direction,
    "lion": _lion_sign,
    "adopt": lambda o, p, b: o.state[p]["exp_avg"],
    "prodigy": lambda o, p, b: o.state[p]["exp_avg"],
}
# η is not defined: a NaN, for every parameter.
UNDEFINED = ["schedulefree_adamw", "schedulefree_sgd", "soap"]


def _model() -> nn.Module:
    """A conv kernel (4-D: flattened by Muon, factored by Adafactor), a hidden and an output
    linear layer, in float64."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.Linear(4, 3), nn.Linear(3, 2)).double()


def _steps(optimizer, model, count=12):
    """Step on shrinking random gradients; per step ``(before, etas)``: each parameter's value,
    state and gradient before the step, and its η from the state after it."""
    for t in range(count):
        params = list(model.parameters())
        for p in params:
            p.grad = torch.randn_like(p) / (1 + t)
        before = {
            id(p): {
                "value": p.detach().clone(),
                "grad": p.grad.clone(),
                "state": copy.deepcopy(optimizer.state.get(p, {})),
            }
            for p in params
        }
        groups = group_values(optimizer)
        optimizer.step()
        values = {key: b["value"] for key, b in before.items()}
        yield before, dict(effective_steps(optimizer, groups, values))


def test_every_optimizer_config_has_its_effective_step_checked_against_its_updates():
    assert sorted([*DIRECTIONS, *UNDEFINED, "adadelta"]) == OPTIMIZERS


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_effective_step_times_direction_is_the_update(name):
    """Over 12 steps with shrinking gradients every element moves by exactly η·d (RAdam's first
    steps are SGD with momentum, its later ones rectified Adam; ADOPT's first step moves
    nothing; Prodigy's d grows from d0). Float64 throughout: the two sides differ only by the
    rounding of a few operations, hence rtol 1e-9."""
    model = _model()
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = _optimizer(name, model)
    for before, etas in _steps(optimizer, model):
        for p in model.parameters():
            old = before[id(p)]["value"]
            update = p.detach() - old + _decayed(optimizer, p, old)
            expected = -etas[p] * DIRECTIONS[name](optimizer, p, before[id(p)])
            torch.testing.assert_close(update, expected, rtol=1e-9, atol=1e-15)
    assert all(not torch.equal(p, s) for p, s in zip(model.parameters(), start, strict=True))


@pytest.mark.parametrize("name", UNDEFINED)
def test_the_effective_step_is_undefined_where_no_factor_gives_the_update(name):
    model = _model()
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = _optimizer(name, model)
    for _, etas in _steps(optimizer, model, count=3):
        assert len(etas) == 6 and all(math.isnan(eta) for eta in etas.values())
    assert all(not torch.equal(p, s) for p, s in zip(model.parameters(), start, strict=True))


def test_adafactor_needs_the_weights_before_the_step():
    """Its relative step scales with RMS(θ) before the step: without it η is unknown (NaN)."""
    model = _model()
    optimizer = _optimizer("adafactor", model)
    next(_steps(optimizer, model, count=1))
    assert all(torch.isnan(torch.as_tensor(eta)).all() for _, eta in effective_steps(optimizer))


def test_muon_effective_step_is_the_shape_scaled_lr():
    """Keller Jordan's factor √max(1, rows/cols): the conv kernel (3 × 18 flattened) and the
    hidden weight (3 × 4) take lr; Moonlight's 0.2·√max(rows, cols) is an option."""
    model = _model()
    optimizer = _optimizer("muon", model, "optimizer.lr=0.1")
    _, etas = next(_steps(optimizer, model, count=1))
    conv, hidden = model[0].weight, model[1].weight
    assert (etas[conv], etas[hidden]) == (pytest.approx(0.1), pytest.approx(0.1))
    optimizer = _optimizer("muon", model, "optimizer.lr=0.1", "optimizer.use_adjusted_lr=true")
    _, etas = next(_steps(optimizer, model, count=1))
    assert etas[conv] == pytest.approx(0.1 * 0.2 * math.sqrt(18))


def test_prodigy_logs_its_estimated_step_size():
    """d·lr: d0 before the first step, then what Prodigy estimated; None for Adam."""
    model = _model()
    optimizer = _optimizer("prodigy", model, "optimizer.lr=0.5")
    assert estimated_step_size(optimizer) == pytest.approx(0.5 * 1e-6)
    gradients = [torch.randn_like(p) for p in model.parameters()]
    for _ in range(5):  # a steady gradient: the steps add up, and d grows
        for p, g in zip(model.parameters(), gradients, strict=True):
            p.grad = g.clone()
        optimizer.step()
    assert estimated_step_size(optimizer) == pytest.approx(0.5 * optimizer.param_groups[0]["d"])
    assert optimizer.param_groups[0]["d"] > 1e-6
    assert estimated_step_size(_optimizer("adam", model)) is None


def test_adadelta_effective_step_is_the_factor_of_its_next_step_while_v_stays():
    """Adadelta's η read after step t is the factor step t+1 applies when v does not change
    (README): a next gradient g with g² = v leaves v = ρ·v + (1 − ρ)·g² as it is, so step t+1
    must move every element by exactly −η·g. It is not the factor of step t itself."""
    model = _model()
    optimizer = _optimizer("adadelta", model)
    before, etas = next(_steps(optimizer, model, count=1))
    assert not any(
        torch.allclose(p.detach() - before[id(p)]["value"], -etas[p] * p.grad)
        for p in model.parameters()
    )  # Δ grew during step 0: its η is not that step's factor
    for _ in range(5):
        values = {id(p): p.detach().clone() for p in model.parameters()}
        for p in model.parameters():
            p.grad = torch.randn_like(p).sign() * optimizer.state[p]["square_avg"].sqrt()
        groups = group_values(optimizer)
        optimizer.step()
        for p in model.parameters():
            # v is unchanged up to one rounding of ρ·v + (1 − ρ)·v: float64 noise, rtol 1e-12.
            move = p.detach() - values[id(p)]
            torch.testing.assert_close(move, -etas[p] * p.grad, rtol=1e-12, atol=0)
        etas = dict(effective_steps(optimizer, groups, values))

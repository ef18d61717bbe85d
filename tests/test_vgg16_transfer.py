"""E1's VGG16 transfer model: layout, what is frozen, and where its weights come from."""

import logging

import pytest
import torch
from hydra.utils import instantiate

from optstudy.cli import compose
from optstudy.errors import ConfigError, find_user_error
from optstudy.models import vgg16_weights
from optstudy.models.vgg16_transfer import VGG16Transfer, vgg16_features
from optstudy.optim import build_optimizer

# torchvision's VGG16 puts a conv at these indices of ``features`` (ReLUs and pools between).
TORCHVISION_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def count(params) -> int:
    return sum(p.numel() for p in params)


def model(**kwargs) -> VGG16Transfer:
    torch.manual_seed(0)
    return VGG16Transfer(3, [32, 32], 17, **{"weights": None, **kwargs})


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A state dict in torchvision's VGG16 layout (conv base plus a classifier to ignore)."""
    torch.manual_seed(42)
    state = {f"features.{k}": v for k, v in vgg16_features(3).state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(4, 8)  # the real one is 4096×25088
    path = tmp_path_factory.mktemp("weights") / "vgg16.pth"
    torch.save(state, path)
    return path


def test_the_base_has_torchvision_s_layout():
    keys = vgg16_features(3).state_dict().keys()
    assert list(keys) == [f"{i}.{p}" for i in TORCHVISION_CONV_INDICES for p in ("weight", "bias")]


def test_frozen_base_leaves_e1_s_90k_trainable_parameters():
    net = model()
    head = 512 * 170 + 170 + 2 * 170 + 170 * 17 + 17
    assert count(p for p in net.parameters() if p.requires_grad) == head == 90_457
    assert count(net.parameters()) == 14_714_688 + head  # E1: 14.8 M
    assert not any(p.requires_grad for p in net.features.parameters())
    assert count(p for p in model(freeze_base=False).parameters() if p.requires_grad) == count(
        net.parameters()
    )


def test_frozen_base_stays_in_eval_mode_and_does_not_train():
    net = model().train()
    assert not net.features.training and net.head.training
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = build_optimizer(
        lambda groups: torch.optim.SGD(groups, lr=0.1), net, decay_norm_and_bias=True
    )
    assert count(p for g in optimizer.param_groups for p in g["params"]) == 90_457
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8)
    torch.nn.functional.cross_entropy(net(images), labels).backward()
    optimizer.step()
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("features."))
    assert not torch.equal(before["head.2.weight"], after["head.2.weight"])


def test_weights_file_loads_the_base(weights_file):
    expected = torch.load(weights_file, weights_only=True)
    net = model(weights=str(weights_file))
    for key, value in net.features.state_dict().items():
        assert torch.equal(value, expected[f"features.{key}"])


def test_bad_weights_files_are_config_errors(tmp_path, weights_file):
    (tmp_path / "notes.txt").write_text("not weights")
    one_channel = {f"features.{k}": v for k, v in vgg16_features(1).state_dict().items()}
    torch.save(one_channel, tmp_path / "grey.pth")
    cases = {
        tmp_path / "missing.pth": "no such file",
        tmp_path / "notes.txt": "is not a state dict that loads safely",
        tmp_path / "grey.pth": "does not hold a VGG16 conv base",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            model(weights=str(path))


def test_without_weights_it_trains_from_scratch_with_a_warning(caplog, monkeypatch):
    with caplog.at_level(logging.WARNING):
        model(weights=None)
    assert "trains from scratch" in caplog.text
    caplog.clear()
    monkeypatch.setattr(vgg16_weights, "torchvision_vgg16_state_dict", lambda: None)
    with caplog.at_level(logging.WARNING):
        model(weights="torchvision")
    assert "torchvision is not installed" in caplog.text and "model.weights=" in caplog.text


def test_torchvision_weights_are_used_when_available(monkeypatch, weights_file):
    state = torch.load(weights_file, weights_only=True)
    monkeypatch.setattr(vgg16_weights, "torchvision_vgg16_state_dict", lambda: state)
    net = model(weights="torchvision")
    assert torch.equal(net.features[0].weight, state["features.0.weight"])


def test_config_composes_e1_s_model():
    cfg, _ = compose(["data=hollywood_stars", "model=vgg16_transfer", "model.weights=null"])
    net = instantiate(cfg.model)
    assert net.head[-1].out_features == 17 and net.freeze_base
    cfg, _ = compose(["data=hollywood_stars", "model=vgg16_transfer", "model.weights=/nope"])
    with pytest.raises(Exception) as info:
        instantiate(cfg.model)
    assert isinstance(find_user_error(info.value), ConfigError)

"""E1's VGG16 transfer model: layout, what is frozen, and where its weights come from."""

import importlib.util
import sys
import types
from urllib.error import URLError

import pytest
import torch
from conftest import run_train
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


def model(weights, **kwargs) -> VGG16Transfer:
    """E1's model for 32×32 images of 17 classes; ``weights`` a file, "torchvision" or None."""
    torch.manual_seed(0)
    return VGG16Transfer(3, [32, 32], 17, weights=str(weights) if weights else None, **kwargs)


def test_the_base_has_torchvision_s_layout():
    keys = vgg16_features(3).state_dict().keys()
    assert list(keys) == [f"{i}.{p}" for i in TORCHVISION_CONV_INDICES for p in ("weight", "bias")]


def test_frozen_base_leaves_e1_s_90k_trainable_parameters(vgg16_weights_file):
    net = model(vgg16_weights_file)
    head = 512 * 170 + 170 + 2 * 170 + 170 * 17 + 17
    assert count(p for p in net.parameters() if p.requires_grad) == head == 90_457
    assert count(net.parameters()) == 14_714_688 + head  # E1: 14.8 M
    assert not any(p.requires_grad for p in net.features.parameters())
    from_scratch = model(None, freeze_base=False)
    assert count(p for p in from_scratch.parameters() if p.requires_grad) == count(net.parameters())


def test_frozen_base_stays_in_eval_mode_and_does_not_train(vgg16_weights_file):
    net = model(vgg16_weights_file).train()
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


def test_weights_file_loads_the_base(vgg16_weights_file):
    expected = torch.load(vgg16_weights_file, weights_only=True)
    net = model(vgg16_weights_file)
    for key, value in net.features.state_dict().items():
        assert torch.equal(value, expected[f"features.{key}"])


def test_bad_weights_files_are_config_errors(tmp_path):
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
            model(path)


def test_a_frozen_base_without_pre_trained_weights_is_refused():
    with pytest.raises(ConfigError) as info:
        model(None)  # freeze_base defaults to true
    message = str(info.value)
    assert message.startswith("model.freeze_base=true needs pre-trained weights, but model.weights")
    assert "model.freeze_base=false to train the whole network from scratch" in message
    assert "\n" not in message


def test_torchvision_weights_without_torchvision_are_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision → ImportError
    with pytest.raises(ConfigError) as info:
        model("torchvision")
    message = str(info.value)
    assert message.startswith("model.weights=torchvision needs torchvision, which is not installed")
    assert "model.weights=<VGG16 state dict file>" in message
    assert message.endswith(f"or {vgg16_weights.FROM_SCRATCH}") and "\n" not in message


def test_torchvision_that_cannot_provide_its_weights_is_a_config_error(monkeypatch):
    """torchvision installed but offline with an empty hub cache: its download fails. Stands in
    for torchvision (not installed here) with a module whose weight enum fails like that."""

    class Weights:
        @staticmethod
        def get_state_dict(progress):
            raise URLError("[Errno -3] Temporary failure in name resolution")

    models = types.ModuleType("torchvision.models")
    models.VGG16_Weights = types.SimpleNamespace(IMAGENET1K_V1=Weights)
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    with pytest.raises(ConfigError) as info:
        model("torchvision")
    message = str(info.value)
    assert message.startswith(
        "model.weights=torchvision: torchvision could not provide its VGG16 ImageNet weights "
        "(<urlopen error [Errno -3] Temporary failure in name resolution>)"
    )
    assert message.endswith(f"or {vgg16_weights.FROM_SCRATCH}")


def test_torchvision_weights_are_used_when_available(monkeypatch, vgg16_weights_file):
    state = torch.load(vgg16_weights_file, weights_only=True)
    monkeypatch.setattr(vgg16_weights, "torchvision_vgg16_state_dict", lambda: state)
    net = model("torchvision")
    assert torch.equal(net.features[0].weight, state["features.0.weight"])


def test_config_composes_e1_s_model(vgg16_weights_file):
    args = ["data=hollywood_stars", "model=vgg16_transfer", f"model.weights={vgg16_weights_file}"]
    net = instantiate(compose(args)[0].model)
    assert net.head[-1].out_features == 17 and net.freeze_base
    from_scratch = ["model.weights=null", "model.freeze_base=false"]
    net = instantiate(compose([*args, *from_scratch])[0].model)
    assert all(p.requires_grad for p in net.parameters())
    cfg, _ = compose(["data=hollywood_stars", "model=vgg16_transfer", "model.weights=/nope"])
    with pytest.raises(Exception) as info:
        instantiate(cfg.model)
    assert isinstance(find_user_error(info.value), ConfigError)


@pytest.mark.parametrize(
    ("weights", "error"),
    [
        ([], "error: model.weights=torchvision needs torchvision, which is not installed"),
        (["model.weights=null"], "error: model.freeze_base=true needs pre-trained weights"),
    ],
    ids=["torchvision missing", "frozen base without weights"],
)
def test_missing_weights_stop_train_py_with_one_line(tmp_path, cache_dir, weights, error):
    if not weights and importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: the run would download its weights")
    run_dir = tmp_path / "run"
    result = run_train(["data=digits", "model=vgg16_transfer", *weights], run_dir, cache_dir)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith(error) and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "train.log"]  # nothing else

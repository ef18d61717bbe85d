"""Every model runs forward and backward on every data set shape and adapts to it."""

import pytest
import torch
from conftest import CONF
from hydra.utils import instantiate

from optstudy.cli import compose
from optstudy.errors import ConfigError, find_user_error

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
# (channels, height, width, classes): Fashion-MNIST/MNIST, digits, CIFAR-10, a 17-class RGB set
SHAPES = [(1, 28, 28, 10), (1, 8, 8, 10), (3, 32, 32, 10), (3, 40, 48, 17)]
# Per model: what it needs beyond the data's shape (no pre-trained weights in tests).
MODEL_SETTINGS = {"vgg16_transfer": ["model.weights=null", "model.freeze_base=false"]}


def test_required_models_exist():
    assert set(MODELS) >= {"mlp", "lenet5", "cnn_2c2d", "cnn_3c3d", "resnet18", "vgg_small"}


def _model_config(model: str, shape: tuple[int, int, int, int], size: str | None = None):
    c, h, w, k = shape
    overrides = [f"data.channels={c}", f"data.image_size={size or f'[{h},{w}]'}"]
    overrides += [f"data.num_classes={k}", *MODEL_SETTINGS.get(model, [])]
    return compose([f"model={model}", *overrides])[0]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("model", MODELS)
def test_forward_backward(model, shape):
    c, h, w, k = shape
    cfg = _model_config(model, shape)
    torch.manual_seed(0)
    net = instantiate(cfg.model)
    logits = net(torch.randn(4, c, h, w))
    assert logits.shape == (4, k)
    logits.logsumexp(1).mean().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("model", MODELS)
def test_a_square_size_given_as_one_number_builds_the_same_model(model):
    def state(size):
        torch.manual_seed(0)
        return instantiate(_model_config(model, (3, 12, 12, 5), size).model).state_dict()

    square, pair = state("12"), state("[12,12]")
    assert list(square) == list(pair)
    assert all(torch.equal(square[k], pair[k]) for k in square)


def test_parameter_counts_match_the_architectures():
    def count(model, shape):
        cfg = _model_config(model, shape)
        return sum(p.numel() for p in instantiate(cfg.model).parameters())

    assert count("mlp", (1, 28, 28, 10)) == 784 * 128 + 128 + 128 * 10 + 10  # E3: 101,770
    # ResNet-18 CIFAR variant: 11,173,962 parameters for 10 classes.
    assert count("resnet18", (3, 32, 32, 10)) == 11_173_962
    # LeNet-5 with "same" convs on 28×28: 16·7·7 = 784 features into fc120.
    assert count("lenet5", (1, 28, 28, 10)) == (1 * 25 * 6 + 6) + (6 * 25 * 16 + 16) + (
        784 * 120 + 120
    ) + (120 * 84 + 84) + (84 * 10 + 10)


def test_too_small_input_is_a_config_error():
    cfg, _ = compose(["model=lenet5", "model.padding=0", "data=digits"])
    with pytest.raises(Exception) as info:
        instantiate(cfg.model)
    error = find_user_error(info.value)
    assert isinstance(error, ConfigError) and "model cannot take 1×8×8 inputs" in str(error)

"""nets.from_torch: PyTorch models written by hand here (torchvision-style BasicBlock/Bottleneck
ResNets, a dense-concat block, an inception block, depthwise-separable blocks, an AlexNet-like net
with LRN, channel shuffle with an NHWC input) convert through torch.fx; the forward pass equals
PyTorch's to 1e-5 in float32 and 1e-10 in float64; LRP of every preset equals zennit's on the
residual network to 1e-6 in float64; unsupported modules and functions are refused by name."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import nets  # noqa: E402


# ------------------------------------------------------------------------------------------------
# models (torchvision's layouts, written out: torchvision itself does not work here)
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes * self.expansion, stride)
        self.sum = None  # zennit's Sum module, for the zennit comparison (its ResNet canonizer does this)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        if self.sum is not None:
            out = self.sum(torch.stack([out, identity], dim=-1))
        else:
            out += identity
        return self.relu2(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = _downsample(cin, planes * 4, stride)
        self.sum = None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.sum is not None:
            out = self.sum(torch.stack([out, identity], dim=-1))
        else:
            out = torch.add(out, identity)
        return F.relu(out, inplace=True)


def _downsample(cin, cout, stride):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    def __init__(self, block, blocks=(2, 1), width=4, classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 5, stride=2, padding=2, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers, cin = [], width
        for i, n in enumerate(blocks):
            for j in range(n):
                layers.append(block(cin, width * 2**i, stride=2 if i and not j else 1))
                cin = width * 2**i * block.expansion
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


class DenseNet(nn.Module):
    """Two DenseNet layers (pre-activation batch norm, bottleneck, torch.cat) and a transition."""

    def __init__(self, cin=4, growth=3):
        super().__init__()
        self.blocks = nn.ModuleList()
        for i in range(2):
            c = cin + i * growth
            self.blocks.append(
                nn.Sequential(
                    nn.BatchNorm2d(c),
                    nn.ReLU(),
                    nn.Conv2d(c, 2 * growth, 1, bias=False),
                    nn.BatchNorm2d(2 * growth),
                    nn.ReLU(),
                    nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False),
                )
            )
        c = cin + 2 * growth
        self.transition = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 4, 1), nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        for block in self.blocks:
            x = torch.cat([x, block(x)], 1)
        return self.head(self.transition(x))


class Inception(nn.Module):
    def __init__(self, cin=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, 8, 3, padding=1), nn.ReLU())
        self.b1 = nn.Sequential(nn.Conv2d(8, 4, 1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(8, 3, 1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(8, 2, 1), nn.ReLU(), nn.Conv2d(2, 3, 5, padding=2), nn.ReLU())
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(8, 3, 1), nn.ReLU())
        self.fc = nn.Linear(14, 6)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)
        x = F.adaptive_avg_pool2d(x, 1).view(x.size(0), -1)
        return self.softmax(self.fc(F.dropout(x, 0.3, training=self.training)))


class MobileNet(nn.Module):
    """Depthwise-separable blocks (depthwise conv, BN, ReLU6, pointwise conv, BN, ReLU6), an even
    'same'-padded kernel (asymmetric) and a dilated grouped convolution."""

    def __init__(self, cin=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, 8, 2, padding="same"), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Sequential(
            nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU6(),
            nn.Conv2d(8, 12, 1, bias=False),
            nn.BatchNorm2d(12),
            nn.ReLU6(),
        )
        self.dilated = nn.Conv2d(12, 12, 3, padding=2, dilation=2, groups=4)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(12, 5))

    def forward(self, x):
        return self.head(F.relu6(self.dilated(self.dw(self.stem(x)))))


class AlexNet(nn.Module):
    """A small AlexNet/CaffeNet: strided conv, LRN, max pool in ceil mode, two-group conv, LRN,
    adaptive average pool (to the size it already has), dropout and dense layers."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=2, padding=2),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(5, alpha=1e-3, beta=0.75, k=2.0),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            nn.Conv2d(8, 12, 3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.LocalResponseNorm(3, alpha=1e-2),
            nn.MaxPool2d(3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(12 * 2 * 2, 16), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(16, 4)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class ShuffleNHWC(nn.Module):
    """NHWC input permuted to NCHW, standardised by buffers ((x - mean) / std), a grouped conv,
    ShuffleNet's channel shuffle (view, transpose, contiguous, view), F.pad, a residual add."""

    def __init__(self, groups=2):
        super().__init__()
        self.groups = groups
        self.register_buffer("mean", torch.tensor([0.1, -0.2, 0.3]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([1.5, 0.5, 2.0]).view(1, 3, 1, 1))
        self.conv1 = nn.Conv2d(3, 8, 1)
        self.conv2 = nn.Conv2d(8, 8, 3, groups=groups)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = (x.permute(0, 3, 1, 2) - self.mean) / self.std
        x = F.relu(self.conv1(x))
        b, c, h, w = x.size()
        y = x.view(b, self.groups, c // self.groups, h, w).transpose(1, 2).contiguous().view(b, -1, h, w)
        y = F.pad(F.relu(self.conv2(y)), (1, 1, 1, 1))
        x = x + y
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Functional(nn.Module):
    """Functional calls on parameters: one convolution weight used twice (weight sharing),
    F.conv2d with 'same' padding and with a stride, spatial means, F.linear."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 3, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.randn(3) * 0.1)
        self.fc = nn.Parameter(torch.randn(4, 3))

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.weight, self.bias, padding="same"))
        x = F.relu(F.conv2d(x, self.weight, None, stride=2, padding=1))
        pooled = x.mean((2, 3)) + torch.mean(x, dim=[-2, -1], keepdim=True).flatten(1)
        return F.linear(pooled, self.fc)


def Activations():  # noqa: N802 (a model factory, named like the classes above)
    """The other element-wise modules, an average pool that does not count its padding, and a
    batch norm over features between linear layers."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(4, 4, 1), nn.Tanh(),
        nn.Conv2d(4, 4, 1), nn.Sigmoid(), nn.Identity(), nn.Hardtanh(-0.5, 0.5),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), nn.Flatten(),
        nn.Linear(4 * 3 * 3, 6), nn.ReLU(), nn.BatchNorm1d(6), nn.Linear(6, 3),
    )  # fmt: skip


MODELS = {
    "resnet_basic": (lambda: ResNet(BasicBlock), (3, 16, 16)),
    "resnet_bottleneck": (lambda: ResNet(Bottleneck, blocks=(1, 1)), (3, 16, 16)),
    "densenet": (DenseNet, (4, 6, 6)),
    "inception": (Inception, (3, 7, 7)),
    "mobilenet": (MobileNet, (4, 9, 9)),
    "alexnet": (AlexNet, (3, 23, 23)),
    "shuffle_nhwc": (ShuffleNHWC, (6, 6, 3)),
    "functional": (Functional, (3, 6, 6)),
    "activations": (Activations, (2, 5, 5)),
}


def build(name, seed=0, dtype=torch.float32):
    """The model with random weights and batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = MODELS[name][0]()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.to(dtype).eval()


def example(name, n=3, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n,) + MODELS[name][1], generator=g, dtype=dtype)


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_equals_pytorch_float32_and_float64(name):
    model, x = build(name), example(name)
    net = nets.from_torch(model, x, dtype=np.float32)
    assert isinstance(net, nets.Graph) and net.input_shape == MODELS[name][1]
    X = example(name, n=4, seed=2)
    with torch.no_grad():
        expected = model(X).numpy()
    np.testing.assert_allclose(net(X.numpy()), expected, rtol=1e-5, atol=1e-5)

    model64 = build(name, dtype=torch.float64)
    net64 = nets.from_torch(model64, example(name, dtype=torch.float64))
    assert net64.dtype == np.float64
    X64 = X.double()
    with torch.no_grad():
        expected64 = model64(X64).numpy()
    np.testing.assert_allclose(net64(X64.numpy()), expected64, rtol=1e-10, atol=1e-10)


def test_structure_of_the_converted_resnet():
    net = nets.from_torch(build("resnet_basic"), example("resnet_basic"))
    kinds = [layer.kind for layer in net.layers]
    # batch norms folded into the convolutions; three residual adds; AdaptiveAvgPool2d(1) + flatten
    # is one GlobalAvgPool2D
    assert "BatchNorm2D" not in kinds and kinds.count("Add") == 3 and kinds.count("Conv2D") == 8
    assert kinds[-2:] == ["GlobalAvgPool2D", "Dense"]
    assert net.node("layers.0.conv1").inputs == ("maxpool",)  # module paths name the nodes
    kept = nets.from_torch(build("resnet_basic"), example("resnet_basic"), fold_batchnorm=False)
    assert [layer.kind for layer in kept.layers].count("BatchNorm2D") == 8
    dense = [layer.kind for layer in nets.from_torch(build("densenet"), example("densenet")).layers]
    assert dense.count("Concat") == 2 and dense.count("BatchNorm2D") == 3  # pre-activation BNs stay
    mobile = nets.from_torch(build("mobilenet"), example("mobilenet"))
    assert [layer.groups for layer in mobile.layers if layer.kind == "Conv2D"] == [1, 8, 1, 4]
    assert mobile.layers[0].kind == "Pad"  # the even 'same' kernel pads asymmetrically


@pytest.mark.parametrize("name", sorted(MODELS))
def test_lrp_conserves_on_the_converted_models_with_zero_biases(name):
    model = build(name, dtype=torch.float64)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.zero_()
        if name == "shuffle_nhwc":
            model.mean.zero_()
    X = example(name, n=2, dtype=torch.float64).abs()
    net = nets.from_torch(model, X)
    for composite in ("epsilon_plus", "epsilon_alpha2_beta1_flat"):
        R, diag = nets.LRP(net, composite).relevance(X.numpy(), target=1, return_diagnostics=True)
        assert np.all(np.isfinite(R)) and np.all(np.abs(diag.bias_absorbed) <= 1e-12)
        np.testing.assert_allclose(R.reshape(2, -1).sum(axis=1) + diag.absorbed, diag.score, atol=1e-9)


def test_example_input_as_a_numpy_array_and_other_dtypes():
    model = build("mobilenet")  # float32 weights
    X = example("mobilenet", dtype=torch.float64).numpy()  # float64 numpy: cast to the model's dtype
    net = nets.from_torch(model, X)
    with torch.no_grad():
        np.testing.assert_allclose(net(X), model(torch.from_numpy(X).float()).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        nets.from_torch(lambda x: x, X)
    with pytest.raises(ValueError, match="batch"):
        nets.from_torch(model, X[0, 0, 0])


def test_training_mode_is_switched_off_with_a_warning():
    model = build("alexnet").train()
    with pytest.warns(UserWarning, match="eval mode"):
        net = nets.from_torch(model, example("alexnet"))
    assert not model.training
    with torch.no_grad():
        np.testing.assert_allclose(
            net(example("alexnet").numpy()), model(example("alexnet")).numpy(), rtol=1e-5, atol=1e-5
        )


class _WithModule(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.odd = module

    def forward(self, x):
        return self.odd(self.conv(x))


class _WithFunction(nn.Module):
    def forward(self, x):
        return torch.exp(x)


class _BatchMix(nn.Module):
    def forward(self, x):
        return x.view(-1, 4)  # folds the batch into the rows


class _Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return x
        return -x


@pytest.mark.parametrize(
    "model, message",
    [
        (
            _WithModule(nn.GELU()),
            r"module 'odd' \(GELU\): .*torch\.nn\.modules\.activation\.GELU is not supported",
        ),
        (_WithModule(nn.Upsample(scale_factor=2)), r"module 'odd' .*Upsample is not supported"),
        (_WithModule(nn.LocalResponseNorm(4)), r"module 'odd' \(LocalResponseNorm\): size=4"),
        (_WithModule(nn.MaxPool2d(2, return_indices=True)), r"return_indices=True"),
        (_WithFunction(), r"node 'exp' \(torch\.exp\): torch\.exp is not supported"),
        (_Branchy(), r"torch\.fx cannot trace this model"),
        (_BatchMix(), r"node 'view' \(view\): reshapes across the batch axis"),
    ],
)
def test_unsupported_modules_and_functions_are_refused_by_name(model, message):
    with pytest.raises(ValueError, match=message):
        nets.from_torch(model.eval(), torch.zeros(2, 2, 4, 4))


def test_conv_padding_modes_other_than_zeros_are_refused():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")).eval()
    with pytest.raises(ValueError, match=r"module '0' \(Conv2d\): padding_mode='reflect'"):
        nets.from_torch(model, torch.zeros(1, 1, 4, 4))


# ------------------------------------------------------------------------------------------------
# LRP equals zennit's on the residual network (adds as zennit's Sum module with the Norm rule)
@pytest.mark.parametrize("block", ["resnet_basic", "resnet_bottleneck"])
def test_lrp_of_every_preset_equals_zennit_on_the_residual_network(block):
    """The converted torchvision-style ResNet explains as zennit explains the PyTorch model itself
    (zennit's own batch-norm merging; the residual adds as its Sum module with Norm)."""
    from nets.composites import COMPOSITES
    from tests.nets.torch_helpers import import_zennit, zennit_relevance

    try:
        _, zennit = import_zennit()
    except ImportError:
        pytest.skip("zennit is not installed")
    from zennit.canonizers import SequentialMergeBatchNorm

    model = build(block, dtype=torch.float64)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            # zennit's merged batch norm keeps its eps: its "identity" still divides by
            # sqrt(1 + eps), a 5e-6 change per batch norm; with eps = 0 it is the identity
            m.eps = 0.0
    X = example(block, n=2, seed=5, dtype=torch.float64)
    net = nets.from_torch(model, X)  # converted from the plain-addition model
    for m in model.modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            m.sum = zennit.layer.Sum()
    SequentialMergeBatchNorm().apply(model)  # zennit's canonizer merges in place, for every preset
    target = np.array([1, 3])
    for preset in sorted(COMPOSITES):
        bounds = {"low": -3.0, "high": 3.0} if preset == "epsilon_gamma_box" else {}
        ours = nets.LRP(net, preset, **bounds).relevance(X.numpy(), target=target)
        theirs = zennit_relevance(torch, zennit, model, X.numpy(), target, preset, **bounds)
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6 * scale, err_msg=preset)

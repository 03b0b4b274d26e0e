"""Neural backbones. All of them output LOGITS (no softmax): the objectives need the
unnormalised scores both for class probabilities (softmax) and for the energy
E(x) = -logsumexp(logits) used by SGLD sampling.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["BACKBONE_NAMES", "MLP", "MNISTNet", "ResNetSmall", "build_backbone"]


def _activation(name: str) -> nn.Module:
    key = name.lower()
    if key in ("silu", "swish"):
        return nn.SiLU()
    if key == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if key == "relu":
        return nn.ReLU()
    if key == "elu":
        return nn.ELU()
    if key == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation '{name}'; valid: silu (swish), leaky_relu, relu, elu, tanh")


class MNISTNet(nn.Module):
    """DeepProbLog's MNIST_Net, layer for layer (44,426 parameters for 10 outputs), but
    returning logits instead of softmax probabilities. Input: [N, 1, 28, 28].

    `channels` (the two convolutions' widths, default 6, 16) and `hidden` (the two hidden
    linear layers' widths, default 120, 84) widen the same LeNet shape; the defaults are
    DeepProbLog's network, so results stay comparable with the published ones unless a
    task file asks for more capacity (and says so).
    """

    def __init__(
        self,
        num_outputs: int = 10,
        in_channels: int = 1,
        channels: Sequence[int] = (6, 16),
        hidden: Sequence[int] = (120, 84),
    ):
        super().__init__()
        if len(channels) != 2 or len(hidden) != 2 or min(*channels, *hidden) < 1:
            raise ValueError(f"MNISTNet needs two positive conv widths and two positive hidden widths, "
                             f"got channels={list(channels)}, hidden={list(hidden)}")
        c1, c2 = (int(c) for c in channels)
        h1, h2 = (int(h) for h in hidden)
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5),  # c1 x 24 x 24
            nn.MaxPool2d(2, 2),  # c1 x 12 x 12
            nn.ReLU(True),
            nn.Conv2d(c1, c2, 5),  # c2 x 8 x 8
            nn.MaxPool2d(2, 2),  # c2 x 4 x 4
            nn.ReLU(True),
        )
        self.classifier = nn.Sequential(
            nn.Linear(c2 * 4 * 4, h1),
            nn.ReLU(),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.Linear(h2, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (28, 28):
            raise ValueError(f"MNISTNet expects 28x28 images, got {tuple(x.shape)}")
        return self.classifier(self.encoder(x).flatten(1))


class MLP(nn.Module):
    """A plain MLP for low-dimensional toy data (moons, circles, ...); inputs [N, in_features]
    (anything else is flattened from dim 1).

    `depth` is the number of hidden layers of width `hidden`. The defaults (3 x 128, 2
    outputs) comfortably separate two moons/circles into 2 clusters.

    Activation: SiLU (Swish) by default. For SGLD the network's input gradient is the
    sampler's drift; a smooth activation gives a smooth energy landscape and gradients
    that change continuously with x, whereas ReLU makes the energy piecewise linear (its
    gradient is piecewise constant and jumps across kinks), which makes Langevin chains
    noisier and the learned density blockier.
    """

    def __init__(
        self,
        in_features: int = 2,
        hidden: int = 128,
        depth: int = 3,
        num_outputs: int = 2,
        activation: str = "silu",
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"MLP depth must be >= 1, got {depth}")
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), _activation(activation)]
            width = hidden
        layers.append(nn.Linear(width, num_outputs))
        self.net = nn.Sequential(*layers)
        self.in_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class _BasicBlock(nn.Module):
    """Pre-activation residual block (act -> conv3x3 -> act -> conv3x3) + shortcut, no norm."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, activation: str):
        super().__init__()
        self.act1 = _activation(activation)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)
        self.act2 = _activation(activation)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1)
        self.shortcut: nn.Module = (
            nn.Conv2d(in_ch, out_ch, 1, stride=stride) if stride != 1 or in_ch != out_ch else nn.Identity()
        )
        # Without batch-norm nothing rescales the residual branches, so the activations'
        # variance would grow with every block. Zero-initialising the last conv of each
        # branch (SkipInit / Fixup style) makes every block start as its shortcut; the
        # branch still learns because conv2's weight gradient is non-zero.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act1(x))
        h = self.conv2(self.act2(h))
        return self.shortcut(x) + h


class ResNetSmall(nn.Module):
    """A small ResNet for 32x32 images (CIFAR-10/100, SVHN), the GEDI-style backbone.

    Stem conv3x3 -> stages of basic residual blocks (widths width * 2**i, stride 2 from the
    second stage on) -> activation -> global average pooling -> linear logits. The default
    `blocks=(1, 1, 1)` is a ResNet-8 (1 + 3*2 convs + 1 linear); `blocks=(2, 2, 2, 2)` is
    ResNet-18-shaped. Any input size works (global pooling), e.g. 1x28x28.

    No batch-norm: EBM training draws SGLD samples and evaluates the network on batches
    that mix data with samples (and on the samples alone); batch statistics then couple
    the samples' energies to each other and differ between data and sampling passes,
    which makes SGLD training unstable. JEM (Grathwohl et al., 2020) removes batch-norm
    for this reason; we do the same and use zero-initialised residual branches instead.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_outputs: int = 10,
        width: int = 64,
        blocks: Sequence[int] = (1, 1, 1),
        activation: str = "silu",
    ):
        super().__init__()
        if not blocks or any(b < 1 for b in blocks):
            raise ValueError(f"ResNetSmall blocks must be a non-empty list of positive ints, got {blocks}")
        self.stem = nn.Conv2d(in_channels, width, 3, stride=1, padding=1)
        stages: list[nn.Module] = []
        ch = width
        for i, n_blocks in enumerate(blocks):
            out_ch = width * 2**i
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                stages.append(_BasicBlock(ch, out_ch, stride, activation))
                ch = out_ch
        self.blocks = nn.Sequential(*stages)
        self.act = _activation(activation)
        self.head = nn.Linear(ch, num_outputs)
        self.feature_dim = ch

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features [N, feature_dim] before the linear head."""
        h = self.act(self.blocks(self.stem(x)))
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


BACKBONE_NAMES = ("mnist_net", "mlp", "resnet_small")


def build_backbone(name: str, num_outputs: int, in_channels: int = 1, **kwargs) -> nn.Module:
    """Build backbone `name` ("mnist_net", "mlp", "resnet_small") with `num_outputs` logits.

    `in_channels` is the number of image channels for "mnist_net" and "resnet_small". For
    "mlp" pass `in_features=` (default 2); if it is not given, an `in_channels` other than
    1 is taken as the number of input features. Other keyword arguments go to the class.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key == "mnist_net":
        return MNISTNet(num_outputs=num_outputs, in_channels=in_channels, **kwargs)
    if key == "mlp":
        in_features = kwargs.pop("in_features", None)
        if in_features is None:
            in_features = in_channels if in_channels != 1 else 2
        return MLP(in_features=in_features, num_outputs=num_outputs, **kwargs)
    if key == "resnet_small":
        return ResNetSmall(in_channels=in_channels, num_outputs=num_outputs, **kwargs)
    raise ValueError(f"unknown backbone '{name}'; valid names: {', '.join(BACKBONE_NAMES)}")

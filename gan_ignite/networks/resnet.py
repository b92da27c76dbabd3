"""The SNGAN ResNet generator and discriminator, for 32, 64 and 128 px images with 1 or 3 channels.

The ResNet of Miyato et al. 2018, "Spectral Normalization for Generative Adversarial Networks"
(appendix B), laid out as in the authors' Chainer code (pfnet-research/sngan_projection) and its
PyTorch ports: kwotsin/mimicry (``torch_mimicry/nets/sngan``), w86763777/pytorch-gan-collections
(``source/models/sngan.py``) and POSTECH-CVLab/PyTorch-StudioGAN (``src/models/resnet.py``).

Widths (``features`` is the widest layer, mimicry's ``ngf`` / ``ndf``; the references' values in
brackets):

* 32 px: G 4x4 -> 3 up-blocks, all ``features`` wide [256, the paper's CIFAR-10 G]; D an optimized
  block, one more down-block and two blocks without downsampling, all ``features`` wide [128].
* 64 px: G features -> f/2 -> f/4 -> f/8 -> f/16 [1024, the Chainer code's 16 * ch with ch = 64];
  D f/16 -> f/8 -> f/4 -> f/2 -> f, every block downsampling [1024].
* 128 px: as 64 px with one more G block at ``features`` first, and one more D block at
  ``features`` without downsampling, at the end.

At the references' widths the parameter counts equal mimicry's SNGAN32/64/128 (4,276,739 and
1,053,825 at 32 px, 3 channels): like mimicry the D's last linear layer has a bias, which the
Chainer 32-px D leaves out. Initialisation follows the Chainer code, as mimicry and
pytorch-gan-collections do: Xavier-uniform weights, gain sqrt(2) for the 3x3 convolutions of the
residual branches and 1 for the shortcuts, the generator's linear layer and last convolution, and
the discriminator's linear layer; biases start at zero (as in Chainer; mimicry keeps PyTorch's
default bias init). Upsampling is nearest-neighbour as in Chainer's ``unpooling_2d`` (mimicry uses
bilinear). Every convolution and linear layer of the discriminator is spectrally normalised.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrizations

SUPPORTED_SIZES = (32, 64, 128)
SUPPORTED_CHANNELS = (1, 3)

# Width of each stage as a divisor of ``features``: the generator's from its 4x4 input to its last
# block, the discriminator's from its first block to its last.
_G_DIVISORS = {32: (1, 1, 1, 1), 64: (1, 2, 4, 8, 16), 128: (1, 1, 2, 4, 8, 16)}
_D_DIVISORS = {32: (1, 1, 1, 1), 64: (16, 8, 4, 2, 1), 128: (16, 8, 4, 2, 1, 1)}
_D_DOWNSAMPLES = {32: (True, True, False, False), 64: (True,) * 5, 128: (True,) * 5 + (False,)}


def _widths(channels: int, image_size: int, features: int, divisors: dict[int, tuple[int, ...]]) -> list[int]:
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {image_size}")
    if channels not in SUPPORTED_CHANNELS:
        raise ValueError(f"channels must be one of {SUPPORTED_CHANNELS}, got {channels}")
    narrowest = max(divisors[image_size])
    if features <= 0 or features % narrowest:
        raise ValueError(f"features must be a positive multiple of {narrowest} at {image_size} px "
                         f"(the narrowest layer is features / {narrowest}), got {features}")
    return [features // divisor for divisor in divisors[image_size]]


def _conv(in_channels: int, out_channels: int, kernel_size: int, gain: float, spectral: bool) -> nn.Module:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    nn.init.xavier_uniform_(conv.weight, gain)
    nn.init.zeros_(conv.bias)
    # after the init: the parametrization keeps the initialised weight as its ``original``
    return parametrizations.spectral_norm(conv) if spectral else conv


class GBlock(nn.Module):
    """BN-ReLU-upsample-conv3x3-BN-ReLU-conv3x3, plus a 1x1-conv-upsample shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.residual = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv(in_channels, out_channels, 3, math.sqrt(2), spectral=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
            _conv(out_channels, out_channels, 3, math.sqrt(2), spectral=False),
        )
        # The references upsample, then convolve; a 1x1 convolution commutes with nearest
        # upsampling, so convolving first gives the same output at a quarter of the cost.
        self.shortcut = nn.Sequential(_conv(in_channels, out_channels, 1, 1.0, spectral=False),
                                      nn.Upsample(scale_factor=2, mode="nearest"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class DBlock(nn.Module):
    """[ReLU]-conv3x3-ReLU-conv3x3-[avgpool], plus a [avgpool]-conv1x1 shortcut, all convolutions
    spectrally normalised.

    ``first`` makes it the optimized block that takes the images: no leading ReLU, the first
    convolution already ``out_channels`` wide (a later block widens in its second), and always
    downsampling. A later block's shortcut is the identity when it neither downsamples nor widens.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool, first: bool = False):
        super().__init__()
        hidden = out_channels if first else in_channels
        layers: list[nn.Module] = [] if first else [nn.ReLU()]  # not in place: the shortcut reads x
        layers += [_conv(in_channels, hidden, 3, math.sqrt(2), spectral=True), nn.ReLU(inplace=True),
                   _conv(hidden, out_channels, 3, math.sqrt(2), spectral=True)]
        if downsample:
            layers.append(nn.AvgPool2d(2))
        self.residual = nn.Sequential(*layers)
        # The Chainer code pools after the shortcut's 1x1 convolution in later blocks; both are
        # linear, so pooling first (as its optimized block does) is the same at a quarter of the cost.
        shortcut: list[nn.Module] = [nn.AvgPool2d(2)] if downsample else []
        if downsample or in_channels != out_channels:
            shortcut.append(_conv(in_channels, out_channels, 1, 1.0, spectral=True))
        self.shortcut = nn.Sequential(*shortcut)  # empty: the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class Generator(nn.Module):
    """latent (N, latent_dim) or (N, latent_dim, 1, 1) -> image (N, channels, size, size) in [-1, 1]."""

    def __init__(self, latent_dim: int = 128, channels: int = 3, image_size: int = 32, features: int = 256):
        super().__init__()
        widths = _widths(channels, image_size, features, _G_DIVISORS)
        self.latent_dim, self.channels, self.image_size = latent_dim, channels, image_size
        self.first_width = widths[0]
        self.linear = nn.Linear(latent_dim, 4 * 4 * widths[0])
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.blocks = nn.Sequential(*(GBlock(w_in, w_out) for w_in, w_out in zip(widths, widths[1:])))
        self.output = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True),
                                    _conv(widths[-1], channels, 3, 1.0, spectral=False), nn.Tanh())

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        hidden = self.linear(latent.flatten(1)).view(-1, self.first_width, 4, 4)
        return self.output(self.blocks(hidden))


class Discriminator(nn.Module):
    """image (N, channels, size, size) -> logit of being real, shape (N, 1); no sigmoid."""

    def __init__(self, channels: int = 3, image_size: int = 32, features: int = 128):
        super().__init__()
        widths = _widths(channels, image_size, features, _D_DIVISORS)
        downsamples = _D_DOWNSAMPLES[image_size]
        blocks = [DBlock(channels, widths[0], downsample=True, first=True)]
        blocks += [DBlock(w_in, w_out, down) for w_in, w_out, down in zip(widths, widths[1:], downsamples[1:])]
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(widths[-1], 1)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        parametrizations.spectral_norm(self.linear)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.blocks(images)).sum(dim=(2, 3))  # global sum pooling
        return self.linear(hidden)

"""The DCGAN generator and discriminator (Radford et al. 2015; the tutorial baseline's architecture),
for 32, 64 and 128 px, parameterised by widths. Weights get the DCGAN initialisation once, at
construction, so a restored model keeps its own.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrizations

SUPPORTED_SIZES = (32, 64, 128)


def _num_upsamplings(image_size: int) -> int:
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {image_size}")
    return int(math.log2(image_size)) - 2  # from 4x4 to image_size x image_size


def dcgan_init(module: nn.Module) -> None:
    """Conv weights ~ N(0, 0.02), bias (if any) 0; BatchNorm weight ~ N(1, 0.02), bias 0 (Radford et al. 2015)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """latent (N, latent_dim) -> image (N, channels, size, size) in [-1, 1]."""

    def __init__(self, latent_dim: int = 100, channels: int = 3, image_size: int = 64, features: int = 64):
        super().__init__()
        self.latent_dim, self.channels, self.image_size = latent_dim, channels, image_size
        blocks = _num_upsamplings(image_size)
        width = features * 2 ** (blocks - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(True)]
        for _ in range(blocks - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model(latent.view(len(latent), -1, 1, 1))


class Discriminator(nn.Module):
    """image (N, channels, size, size) -> logit of being real, shape (N, 1); the ``bce`` loss
    applies the tutorial baseline's sigmoid. With ``spectral_norm`` every convolution is spectrally
    normalised (Miyato et al. 2018) and gets a bias in place of the BatchNorm layers, which are dropped.
    """

    def __init__(self, channels: int = 3, image_size: int = 64, features: int = 64, spectral_norm: bool = False):
        super().__init__()
        blocks = _num_upsamplings(image_size)
        width = features
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1, bias=spectral_norm),
                                   nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(blocks - 1):
            layers.append(nn.Conv2d(width, width * 2, 4, 2, 1, bias=spectral_norm))
            if not spectral_norm:
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width *= 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=spectral_norm))
        self.model = nn.Sequential(*layers)
        self.apply(dcgan_init)
        if spectral_norm:  # after the init: the parametrization wraps the initialised weight
            for layer in self.model:
                if isinstance(layer, nn.Conv2d):
                    parametrizations.spectral_norm(layer)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).flatten(1)

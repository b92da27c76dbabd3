"""Differentiable augmentation of everything the discriminator sees (reals and fakes, D's and G's
step), in a registry: ``diffaugment`` (Zhao et al. 2020), ``ada`` (StyleGAN2-ADA, Karras et al. 2020)
and ``none``. All return images in [-1, 1].

Random parameters are drawn on the CPU, whose RNG DeterministicEngine checkpoints, so a resumed run
draws the same augmentations as the uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import ignite.distributed as idist
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from torch import nn


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return (torch.rand(n) * (high - low) + low).to(device)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def translate(images: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor) -> torch.Tensor:
    """Move each image by whole pixels (``shift_y``, ``shift_x`` (N,) integers), filling with zeros."""
    n, _, height, width = images.shape
    pad = int(max(shift_y.abs().max(), shift_x.abs().max()))
    padded = F.pad(images, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # N, H, W, C for the gather
    rows = torch.arange(height, device=images.device)[None] + pad - shift_y.to(images.device)[:, None]
    cols = torch.arange(width, device=images.device)[None] + pad - shift_x.to(images.device)[:, None]
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def cutout(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square per image at (``top``, ``left``) (N,), clipped to the image."""
    _, _, height, width = images.shape
    top, left = top.to(images.device)[:, None], left.to(images.device)[:, None]
    ys, xs = torch.arange(height, device=images.device)[None], torch.arange(width, device=images.device)[None]
    inside_y = (ys >= top) & (ys < top + size)
    inside_x = (xs >= left) & (xs < left + size)
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])
    return images * keep[:, None].to(images.dtype)


class DiffAugment(nn.Module):
    """Colour (brightness, saturation for RGB, contrast), translation by up to 1/8 of the size with
    zero padding, and cutout of a square of half the size, each with its own draw per sample."""

    def __init__(self, translation_ratio: float = 0.125, cutout_ratio: float = 0.5):
        super().__init__()
        self.translation_ratio, self.cutout_ratio = translation_ratio, cutout_ratio

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.cutout(self.translation(self.colour(images).clamp(-1, 1)))

    def colour(self, images: torch.Tensor) -> torch.Tensor:
        n, device = images.size(0), images.device
        images = images + _per_sample(_uniform(n, -0.5, 0.5, device))
        if images.size(1) == 3:
            mean = images.mean(dim=1, keepdim=True)
            images = (images - mean) * _per_sample(_uniform(n, 0.0, 2.0, device)) + mean
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        return (images - mean) * _per_sample(_uniform(n, 0.5, 1.5, device)) + mean

    def translation(self, images: torch.Tensor) -> torch.Tensor:
        n, height, width = images.size(0), images.size(2), images.size(3)
        max_y, max_x = int(height * self.translation_ratio + 0.5), int(width * self.translation_ratio + 0.5)
        return translate(images, torch.randint(-max_y, max_y + 1, (n,)), torch.randint(-max_x, max_x + 1, (n,)))

    def cutout(self, images: torch.Tensor) -> torch.Tensor:
        n, height = images.size(0), images.size(2)
        size = int(height * self.cutout_ratio + 0.5)
        # the square's centre anywhere in the image, so it may hang over the border
        return cutout(images, torch.randint(0, height, (n,)) - size // 2,
                      torch.randint(0, images.size(3), (n,)) - size // 2, size)


def _enabled(n: int, p: float) -> torch.Tensor:
    return torch.rand(n) < p


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample each image through its 2x3 affine ``theta`` (bilinear, reflection padding), differentiably."""
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def ada_geometry(n: int, size: int, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2, 3) affine matrices of StyleGAN2-ADA's flip, integer translation, isotropic zoom and rotation,
    each enabled with probability ``p``; and which samples moved at all."""
    flip, shift, zoom, turn = (_enabled(n, p) for _ in range(4))
    flip &= torch.rand(n) < 0.5
    scale_x = torch.where(flip, -1.0, 1.0)
    pixels = torch.round((torch.rand(n, 2) * 2 - 1) * 0.125 * size)
    offset = torch.where(shift[:, None], pixels * 2 / size, 0.0)  # whole pixels in [-1, 1] units
    zoom_factor = torch.where(zoom, torch.exp2(torch.randn(n) * 0.2), 1.0)
    angle = torch.where(turn, (torch.rand(n) * 2 - 1) * math.pi, 0.0)
    cos, sin = torch.cos(angle) / zoom_factor, torch.sin(angle) / zoom_factor
    matrix = torch.eye(3).repeat(n, 1, 1)
    matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 1, 0], matrix[:, 1, 1] = cos * scale_x, -sin, sin * scale_x, cos
    matrix[:, :2, 2] = offset
    return matrix[:, :2], flip | shift | zoom | turn


class AdaAugment(nn.Module):
    """StyleGAN2-ADA's geometric and colour transforms, each applied to a sample with probability
    :attr:`p` (brightness and contrast for any image, saturation for RGB). ``p = 0`` is the identity."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.p <= 0:
            return images
        n, size = images.size(0), images.size(-1)
        theta, moved = ada_geometry(n, size, self.p)
        images = torch.where(_per_sample(moved.to(images.device)), warp(images, theta), images)
        return self.colour(images).clamp(-1, 1)

    def colour(self, images: torch.Tensor) -> torch.Tensor:
        n, device = images.size(0), images.device
        brightness = torch.where(_enabled(n, self.p), torch.randn(n) * 0.2, 0.0)
        contrast = torch.where(_enabled(n, self.p), torch.exp2(torch.randn(n) * 0.5), 1.0)
        images = (images + _per_sample(brightness.to(device))) * _per_sample(contrast.to(device))
        if images.size(1) == 3:
            saturation = torch.where(_enabled(n, self.p), torch.exp2(torch.randn(n)), 1.0)
            mean = images.mean(dim=1, keepdim=True)
            images = (images - mean) * _per_sample(saturation.to(device)) + mean
        return images


class AdaController:
    """Integral control of :attr:`AdaAugment.p` (StyleGAN2-ADA): every ``interval`` iterations
    ``p += sign(r_t - target) * images / speed_images``, clamped to [0, 1], where r_t = E[sign(D(augmented
    reals))] and ``images`` count the reals all processes saw meanwhile (all-reduced: every rank keeps one p)."""

    def __init__(self, augment: AdaAugment, target: float = 0.6, speed_images: int = 500_000, interval: int = 4):
        self.augment, self.target, self.speed_images, self.interval = augment, target, speed_images, interval
        self.sign_sum: float | torch.Tensor = 0.0  # a device tensor between adjustments: no sync per step
        self.images, self.iterations = 0, 0

    @property
    def p(self) -> float:
        return self.augment.p

    def accumulate(self, sign_mean: float | torch.Tensor, images: int) -> None:
        """One iteration's mean sign of D's logits on ``images`` reals (a tensor stays on its device)."""
        if isinstance(sign_mean, torch.Tensor):
            sign_mean = sign_mean.detach().double()
        self.sign_sum = self.sign_sum + sign_mean * images
        self.images += images
        self.iterations += 1
        if self.iterations == self.interval:
            self._adjust()

    def _adjust(self) -> None:
        totals = torch.tensor([float(self.sign_sum), float(self.images)], dtype=torch.float64)
        if idist.get_world_size() > 1:
            totals = idist.all_reduce(totals.to(idist.device())).cpu()
        signs, images = totals.tolist()
        r_t = signs / images
        if math.isfinite(r_t):  # a diverged step (NaN logits) leaves p alone; the NaN guard stops the run
            direction = (r_t > self.target) - (r_t < self.target)
            self.augment.p = min(max(self.augment.p + direction * images / self.speed_images, 0.0), 1.0)
        self.sign_sum, self.images, self.iterations = 0.0, 0, 0

    def attach(self, trainer: Engine) -> None:
        """Feed the controller from the training step's ``real_sign`` output after every iteration."""
        @trainer.on(Events.ITERATION_COMPLETED)
        def _update(engine: Engine) -> None:
            self.accumulate(engine.state.output["real_sign"], engine.state.batch[0].size(0))

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "sign_sum": float(self.sign_sum), "images": self.images, "iterations": self.iterations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.augment.p = float(state["p"])
        self.sign_sum, self.images = float(state["sign_sum"]), int(state["images"])
        self.iterations = int(state["iterations"])


AUGMENTS: dict[str, Callable[[], nn.Module]] = {"none": nn.Identity, "diffaugment": DiffAugment, "ada": AdaAugment}


def build_augment(name: str) -> nn.Module:
    if name not in AUGMENTS:
        raise ValueError(f"Unknown augmentation '{name}'; choose one of {', '.join(AUGMENTS)}")
    return AUGMENTS[name]()

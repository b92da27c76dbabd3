"""Images -> what the FID Inception expects: uint8, RGB, 299 x 299.

Resizing is where FID implementations disagree the most (Parmar et al., "On Aliased Resizing
and Surprising Subtleties in GAN Evaluation", 2022):

- pytorch-fid: ``torch.nn.functional.interpolate(mode="bilinear")`` on the float tensor, without
  anti-aliasing; a 299x299 input passes through unchanged.
- torch-fidelity: a TF1-compatible bilinear interpolation on the float tensor.
- clean-fid: PIL bicubic, per channel on float32 (mode "F"), not re-quantised to uint8.
- the seed notebook: PIL bilinear.

We resize the uint8 image with PIL (anti-aliased, like clean-fid; ``"bilinear"`` = the seed
notebook's choice, ``"bicubic"`` = closest to clean-fid but rounded back to uint8). Images that
are already 299x299 are not touched, so on 299x299 inputs our features equal pytorch-fid's.
The same function serves generated images, real training images and image folders, so every
set goes through identical preprocessing.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import torch
from PIL import Image

__all__ = ["INCEPTION_SIZE", "RESIZE_METHODS", "resize_for_inception", "resize_image", "to_uint8"]

INCEPTION_SIZE = 299
ResizeMethod = Literal["bilinear", "bicubic"]
_RESAMPLING = getattr(Image, "Resampling", Image)  # Pillow < 9.1 has the constants on Image
RESIZE_METHODS = {"bilinear": _RESAMPLING.BILINEAR, "bicubic": _RESAMPLING.BICUBIC}


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] (float N x C x H x W) -> uint8 0..255, rounded and clamped."""
    return ((images.detach().float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def resize_for_inception(images: torch.Tensor, method: ResizeMethod = "bilinear") -> torch.Tensor:
    """uint8 N x C x H x W (C = 1 or 3) -> uint8 N x 3 x 299 x 299 on the same device.

    Each image is resized with PIL (grayscale in mode "L", then repeated to three channels);
    images already at 299 x 299 are returned unchanged.
    """
    _check_uint8_batch(images)
    if tuple(images.shape[-2:]) == (INCEPTION_SIZE, INCEPTION_SIZE):
        return images.expand(-1, 3, -1, -1).contiguous()
    resized = _resize_pool().map(lambda image: resize_image(image, method), images.cpu())
    return torch.stack(list(resized)).to(images.device)


def resize_image(image: torch.Tensor, method: ResizeMethod = "bilinear") -> torch.Tensor:
    """One uint8 C x H x W image (C = 1 or 3) -> uint8 3 x 299 x 299 with PIL."""
    if tuple(image.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
        pil_image = Image.fromarray(image.permute(1, 2, 0).squeeze(2).cpu().numpy())
        resized = pil_image.resize((INCEPTION_SIZE, INCEPTION_SIZE), _resample(method))
        image = torch.from_numpy(np.asarray(resized).copy()).view(INCEPTION_SIZE, INCEPTION_SIZE, -1).permute(2, 0, 1)
    return image.expand(3, -1, -1).contiguous()


def _resize_pool() -> ThreadPoolExecutor:
    # PIL releases the GIL while resampling, so threads scale; on a GPU the serial resize of a
    # batch would otherwise cost more than the Inception forward. One pool per process: a
    # forked child (DataLoader worker) cannot use its parent's threads.
    return _pool_for_process(os.getpid())


@functools.cache
def _pool_for_process(pid: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix=f"resize299-{pid}")


def _resample(method: str) -> int:
    try:
        return RESIZE_METHODS[method]
    except KeyError:
        raise ValueError(f"Unknown resize method '{method}'; use one of {sorted(RESIZE_METHODS)}.") from None


def _check_uint8_batch(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"resize_for_inception expects uint8 N x C x H x W with C in (1, 3), got {images.dtype} "
            f"{tuple(images.shape)}; convert generator output with to_uint8 first."
        )

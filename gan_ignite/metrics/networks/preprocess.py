"""Images -> the input of the FID Inception's first convolution, by a named protocol that reproduces one
implementation's resize and scaling exactly (docs/protocols.md): ``tutorial`` (PIL bilinear, ``x / 127.5 - 1``),
``pytorch-fid`` (``F.interpolate`` bilinear, ``2x - 1``), ``torch-fidelity`` (TensorFlow 1's bilinear on 0..255,
``(x - 128) / 128``) and ``clean-fid`` (PIL bicubic on float32, ``(x - 128) / 128``). Generated images are
quantised to uint8 first, like image files; grayscale is resized once, then repeated to three channels.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gan_ignite.metrics.options import DEFAULT_PROTOCOL, ProtocolName

INCEPTION_SIZE = 299
_SIZE = (INCEPTION_SIZE, INCEPTION_SIZE)
_RESAMPLING = getattr(Image, "Resampling", Image)  # Pillow < 9.1 has the constants on Image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] (float N x C x H x W) -> uint8 0..255, rounded and clamped."""
    return ((images.detach().float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def tutorial_resize(images: torch.Tensor) -> torch.Tensor:
    return _each_image(images, _pil_uint8_bilinear) if _needs_resize(images) else images


def tutorial_scale(resized: torch.Tensor) -> torch.Tensor:
    """``x / 127.5 - 1`` computed as pytorch-fid computes it, so 299 x 299 images give its input bit for bit."""
    return 2 * (resized.float() / 255) - 1


def pytorch_fid(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255
    if _needs_resize(images):
        x = F.interpolate(x, size=_SIZE, mode="bilinear", align_corners=False)
    return 2 * x - 1


def torch_fidelity(images: torch.Tensor) -> torch.Tensor:
    return inception_scale(tensorflow1_bilinear(images.float()))


def tensorflow1_bilinear(images: torch.Tensor) -> torch.Tensor:
    """TensorFlow 1's ``resize_bilinear`` to 299 x 299 (source = target * in / out, no half-pixel offset),
    bit for bit torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x``, in two separable passes."""
    x_low, x_high, dx = _tensorflow1_grid(images.shape[-1], images.device)
    y_low, y_high, dy = _tensorflow1_grid(images.shape[-2], images.device)
    left = images[..., x_low]
    rows = left + (images[..., x_high] - left) * dx
    top = rows[..., y_low, :]
    return top + (rows[..., y_high, :] - top) * dy.view(-1, 1)


@functools.cache
def _tensorflow1_grid(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices below / above and float32 weights of the 299 targets (computed on the CPU: same everywhere)."""
    scale = torch.tensor(size / INCEPTION_SIZE, dtype=torch.float32)
    position = torch.arange(INCEPTION_SIZE, dtype=torch.float32) * scale
    low = position.long()
    return low.to(device), (low + 1).clamp_max(size - 1).to(device), (position - low.float()).to(device)


def clean_fid_resize(images: torch.Tensor) -> torch.Tensor:
    return _each_image(images, _pil_float_bicubic)


def inception_scale(resized: torch.Tensor) -> torch.Tensor:
    return (resized.float() - 128) / 128


@dataclass(frozen=True)
class Protocol:
    """uint8 ``N x C x H x W`` -> the Inception's float32 input: ``on_host`` (the PIL part, CPU only;
    None when there is none), then ``finish`` (tensor code, on the device its input is on)."""

    on_host: Optional[Callable[[torch.Tensor], torch.Tensor]]
    finish: Callable[[torch.Tensor], torch.Tensor]


# name -> protocol; each name is also in gan_ignite.metrics.options.ProtocolName
PROTOCOLS: dict[str, Protocol] = {
    "tutorial": Protocol(tutorial_resize, tutorial_scale),
    "pytorch-fid": Protocol(None, pytorch_fid),
    "torch-fidelity": Protocol(None, torch_fidelity),
    "clean-fid": Protocol(clean_fid_resize, inception_scale),
}
assert list(PROTOCOLS) == [str(name) for name in ProtocolName], "every protocol's name is listed in ProtocolName"


def prepare_for_inception(images: torch.Tensor, protocol: str = DEFAULT_PROTOCOL,
                          device: Optional[torch.device] = None) -> torch.Tensor:
    """uint8 ``N x C x H x W`` (C = 1 or 3) -> float32 ``N x 3 x 299 x 299`` on ``device`` (default: where they are)."""
    _check_uint8_batch(images)
    chosen = PROTOCOLS[protocol]
    staged = chosen.on_host(images.cpu()) if chosen.on_host is not None else images
    return finish_for_inception(to_device(staged, device) if device is not None else staged, protocol)


def stage_one_for_inception(image: torch.Tensor, protocol: str = DEFAULT_PROTOCOL) -> torch.Tensor:
    """The CPU stage of ``protocol`` for one uint8 ``C x H x W`` image (a loader worker's share)."""
    _check_uint8_batch(image.unsqueeze(0))
    chosen = PROTOCOLS[protocol]
    return chosen.on_host(image.unsqueeze(0))[0] if chosen.on_host is not None else image


def finish_for_inception(staged: torch.Tensor, protocol: str = DEFAULT_PROTOCOL) -> torch.Tensor:
    """Staged images (:func:`stage_one_for_inception`, batched) -> float32 ``N x 3 x 299 x 299`` where they are."""
    return PROTOCOLS[protocol].finish(staged).expand(-1, 3, -1, -1)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; to a GPU through pinned memory, non-blocking (pageable memory synchronises)."""
    device = torch.device(device)
    if tensor.device == device or (device.type == tensor.device.type and device.index is None):
        return tensor
    if tensor.device.type == "cpu" and device.type == "cuda":
        if not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(device, non_blocking=True)
    return tensor.to(device)


def _needs_resize(images: torch.Tensor) -> bool:
    return tuple(images.shape[-2:]) != _SIZE


def _pil_uint8_bilinear(channels: np.ndarray) -> np.ndarray:
    image = Image.fromarray(channels.squeeze(2) if channels.shape[2] == 1 else channels)
    return np.asarray(image.resize(_SIZE, _RESAMPLING.BILINEAR)).reshape(*_SIZE, -1)


def _pil_float_bicubic(channels: np.ndarray) -> np.ndarray:
    resized = [np.asarray(Image.fromarray(channels[:, :, index].astype(np.float32)).resize(_SIZE, _RESAMPLING.BICUBIC))
               for index in range(channels.shape[2])]
    return np.stack(resized, axis=2).clip(0, 255)


def _each_image(images: torch.Tensor, resize: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
    """``resize`` (H x W x C numpy -> 299 x 299 x C) applied to every image, in the thread pool."""
    as_hwc = images.permute(0, 2, 3, 1).numpy()
    resized = list(_resize_pool(os.getpid()).map(resize, as_hwc)) if len(as_hwc) > 1 else [resize(as_hwc[0])]
    return torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2)


@functools.cache
def _resize_pool(pid: int) -> ThreadPoolExecutor:
    # PIL releases the GIL while resampling, so threads scale; one pool per process, as a forked
    # child (a DataLoader worker) cannot use its parent's threads
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix=f"resize299-{pid}")


def _check_uint8_batch(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"prepare_for_inception expects uint8 N x C x H x W with C in (1, 3), got {images.dtype} "
                         f"{tuple(images.shape)}; convert generator output with to_uint8 first.")

"""Image files: finding them and decoding any mode to 8-bit ``L`` or ``RGB``; shared by the training
data (``gan_ignite.data``) and the metrics, so both read the same files the same way.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

logger = logging.getLogger(__name__)
# image formats that are not read (animations, vector and newer formats): named in a warning, never silently skipped
NOT_READ_EXTENSIONS = (".gif", ".apng", ".svg", ".heic", ".heif", ".avif", ".jxl")

# what PIL raises for a file it cannot (or will not: a decompression bomb) decode
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def find_image_files(root: str | os.PathLike) -> list[Path]:
    """Every image file under ``root`` (recursive, links followed once, extensions case-insensitive), sorted."""
    extensions = tuple(IMG_EXTENSIONS)
    files, skipped, visited = [], [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        try:
            status = os.stat(folder)
        except OSError:
            subfolders[:] = []
            continue
        if (status.st_dev, status.st_ino) in visited:
            subfolders[:] = []
            continue
        visited.add((status.st_dev, status.st_ino))
        subfolders.sort()
        files.extend(Path(folder) / name for name in names if name.lower().endswith(extensions))
        skipped.extend(Path(folder) / name for name in names if name.lower().endswith(NOT_READ_EXTENSIONS))
    if skipped:
        kinds = sorted({path.suffix.lower() for path in skipped})
        logger.warning("%d file(s) under '%s' are not read: %s is not among the image formats read (%s), e.g. '%s'. "
                       "Convert them to PNG to include them.", len(skipped), root, "/".join(kinds),
                       ", ".join(IMG_EXTENSIONS), skipped[0])
    return sorted(files)


class ConvertMode:
    """Convert any PIL mode to ``L`` or ``RGB`` (picklable for workers): wide grayscale scaled to 8 bits (PIL's
    convert clips at 255), palette and alpha through RGBA (transparency dropped as ``convert("RGB")`` drops it)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.mode == self.mode:
            return image
        if image.mode.startswith("I;16") or image.mode in ("I", "F"):
            values = np.asarray(image).astype(np.float64)
            if image.mode.startswith("I;16") or (image.mode == "I" and values.max() > 255):
                values = values / 65535.0 * 255.0
            elif image.mode == "F" and values.max() <= 1.0:
                values = values * 255.0
            image = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8))
        elif image.mode in ("P", "PA", "LA") and self.mode == "RGB":
            image = image.convert("RGBA")
        return image.convert(self.mode)


def load_image_rgb(path: str | os.PathLike) -> torch.Tensor:
    """An image file of any mode -> uint8 3 x H x W."""
    with Image.open(path) as image:
        image.load()
        rgb = np.asarray(ConvertMode("RGB")(image))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()

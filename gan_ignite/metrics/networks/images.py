"""Image files: finding them and decoding any mode to 8-bit ``L`` or ``RGB``; shared by the training
data (``gan_ignite.data``) and the metrics, so both read the same files the same way.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from gan_ignite.errors import DataError

logger = logging.getLogger(__name__)
DATA_HELP = "See docs/data.md (the documentation's 'Data' page) for the expected layout and how to download it."
# image formats that are not read (animations, vector and newer formats): named in a warning, never silently skipped
NOT_READ_EXTENSIONS = (".gif", ".apng", ".svg", ".heic", ".heif", ".avif", ".jxl")
# what PIL raises for a file it cannot (or will not: a decompression bomb) decode
UNREADABLE_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
MAX_ASPECT = 64  # a longer side than 64 x the shorter one is not a picture; resized to a square's side it is a bomb


def find_image_files(root: str | os.PathLike) -> list[Path]:
    """Every image file under ``root`` (recursive, links followed once, extensions case-insensitive), sorted.
    Names that are not regular files (a dangling link, a FIFO, a device) are skipped and counted in a
    warning: opening one would fail or block."""
    extensions = tuple(IMG_EXTENSIONS)
    files, skipped, irregular, visited = [], [], [], set()
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
        for name in names:
            path = Path(folder) / name
            if name.lower().endswith(extensions):
                (files if _is_regular(path) else irregular).append(path)
            elif name.lower().endswith(NOT_READ_EXTENSIONS):
                skipped.append(path)
    if skipped:
        kinds = sorted({path.suffix.lower() for path in skipped})
        logger.warning("%d file(s) under '%s' are not read: %s is not among the image formats read (%s), e.g. '%s'. "
                       "Convert them to PNG to include them.", len(skipped), root, "/".join(kinds),
                       ", ".join(IMG_EXTENSIONS), skipped[0])
    if irregular:
        logger.warning("%d name(s) under '%s' look like images but are not regular files (a dangling link, a FIFO or "
                       "a device), e.g. '%s': they are skipped.", len(irregular), root, irregular[0])
    return sorted(files)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:  # a dangling link, or no permission
        return False


def read_image(path: str | os.PathLike, transform: Callable[[Image.Image], Any], max_aspect: float = MAX_ASPECT) -> Any:
    """``transform`` of the decoded image of ``path``. PIL refuses a decompression bomb when it opens the
    file; an image with a side more than ``max_aspect`` times the other is refused the same way before
    anything is decoded (resized to a square's side, it would be a bomb)."""
    with Image.open(path) as image:
        width, height = image.size
        if max(width, height) > max_aspect * max(min(width, height), 1):
            raise Image.DecompressionBombError(f"{width} x {height} pixels: one side is more than {max_aspect:g} "
                                               f"times the other")
        image.load()
        return transform(image)


def to_rgb_tensor(image: Image.Image) -> torch.Tensor:
    """Any PIL image -> uint8 3 x H x W."""
    return torch.from_numpy(np.asarray(ConvertMode("RGB")(image)).copy()).permute(2, 0, 1).contiguous()


class ImageFiles(Dataset):
    """Every image file under ``root`` (:func:`find_image_files`); item ``i`` is ``transform(image)``.
    An unreadable file gives ``None`` with ``skip_bad_images`` (the collate drops and counts it), else a
    :class:`DataError` naming it, followed by ``fix``."""

    def __init__(self, root: str | os.PathLike, transform: Callable[[Image.Image], Any], skip_bad_images: bool = True,
                 fix: str = "Remove or replace the file, or set data.skip_bad_images=true to skip unreadable images.",
                 files: list[Path] | None = None):
        self.root, self.transform, self.skip_bad_images, self.fix = Path(root), transform, skip_bad_images, fix
        how = f"Put the images there or point data.root at them. {DATA_HELP}"
        if not self.root.is_dir():
            raise DataError(f"Dataset root '{self.root}' does not exist or is not a folder (data.root). {how}")
        self.files = files if files is not None else find_image_files(self.root)
        if not self.files:
            raise DataError(f"Dataset root '{self.root}' holds no image files ({', '.join(IMG_EXTENSIONS)}), "
                            f"searched recursively. {how}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        path = self.files[index]
        try:
            return read_image(path, self.transform)
        except UNREADABLE_IMAGE_ERRORS as error:  # decompression bombs included
            if self.skip_bad_images:
                logger.warning("Skipping unreadable image %s (%s)", path, error)
                return None
            raise DataError(f"Cannot read image file '{path}': {error}. {self.fix}") from None


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
    return read_image(path, to_rgb_tensor)

"""Features of an image folder, preprocessed exactly like the evaluator's images."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

from gan_ignite.errors import DataError
from gan_ignite.metrics.networks.features import FeatureNetwork, finish_staged
from gan_ignite.metrics.networks.images import IMG_EXTENSIONS, ImageFiles, find_image_files, to_rgb_tensor


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, extensions case-insensitive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"'{folder}' is not a folder of images.")
    files = find_image_files(folder)  # the same files the training data loader would read
    if not files:
        raise DataError(f"Folder '{folder}' contains no images (looked recursively for {', '.join(IMG_EXTENSIONS)}).")
    return files


def _staged(prepare_one: Callable[[torch.Tensor], torch.Tensor], image: Image.Image) -> torch.Tensor:
    return prepare_one(to_rgb_tensor(image))


def collate_staged(images: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """The staged images stacked (a list when they differ in size, then resized on the device one by one)."""
    return torch.stack(images) if all(image.shape == images[0].shape for image in images) else images


def folder_features(folder: str | os.PathLike, network: FeatureNetwork, batch_size: int = 50,
                    num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, F], logits [N, K]) on the CPU of every image under ``folder``; loader workers decode (and
    resize, for the PIL protocols), the network's device does the rest, without a synchronisation per batch."""
    dataset = ImageFiles(folder, functools.partial(_staged, network.prepare_one), skip_bad_images=False,
                         fix="Remove or fix the file and run again.", files=list_images(folder))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_staged, pin_memory=network.device.type == "cuda")
    features, logits = [], []
    for images in loader:
        batch_features, batch_logits = network(finish_staged(images, network))
        features.append(batch_features)
        logits.append(batch_logits)
    return torch.cat(features).cpu(), torch.cat(logits).cpu()

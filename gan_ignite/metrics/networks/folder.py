"""Features of an image folder, preprocessed exactly like the evaluator's images."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from gan_ignite.errors import DataError
from gan_ignite.metrics.networks.features import FeatureNetwork, finish_staged
from gan_ignite.metrics.networks.images import IMG_EXTENSIONS, find_image_files, load_image_rgb


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, extensions case-insensitive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"'{folder}' is not a folder of images.")
    files = find_image_files(folder)  # the same files the training data loader would read
    if not files:
        raise DataError(f"Folder '{folder}' contains no images (looked recursively for {', '.join(IMG_EXTENSIONS)}).")
    return files


class ImageFileDataset(Dataset):
    """Item ``i``: ``(prepare_one(image), "")``, or ``(a black image, "path: reason")`` for an unreadable file."""

    def __init__(self, files: list[Path], prepare_one: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.files, self.prepare_one = files, prepare_one

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path = self.files[index]
        try:
            return self.prepare_one(load_image_rgb(path)), ""
        except Exception as error:  # PIL raises many types for broken files
            return self.prepare_one(torch.zeros((3, 8, 8), dtype=torch.uint8)), f"{path}: {error}"


def collate_staged(items: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor | list[torch.Tensor], list[str]]:
    """The staged images stacked (a list when they differ in size, then resized on the device one by one)."""
    images, errors = [image for image, _ in items], [error for _, error in items]
    same = all(image.shape == images[0].shape for image in images)
    return (torch.stack(images) if same else images), errors


def folder_features(folder: str | os.PathLike, network: FeatureNetwork, batch_size: int = 50,
                    num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, F], logits [N, K]) on the CPU of every image under ``folder``; loader workers decode (and
    resize, for the PIL protocols), the network's device does the rest, without a synchronisation per batch."""
    dataset = ImageFileDataset(list_images(folder), network.prepare_one)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_staged, pin_memory=network.device.type == "cuda")
    features, logits = [], []
    for images, errors in loader:
        bad = [error for error in errors if error]
        if bad:
            raise DataError(f"Cannot read image {bad[0]}. Remove or fix the file and run again.")
        batch_features, batch_logits = network(finish_staged(images, network))
        features.append(batch_features)
        logits.append(batch_logits)
    return torch.cat(features).cpu(), torch.cat(logits).cpu()

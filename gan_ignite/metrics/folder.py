"""Inception outputs of an image folder, preprocessed exactly like the evaluator's images."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

from gan_ignite.data import find_image_files
from gan_ignite.metrics.preprocess import INCEPTION_SIZE, ResizeMethod, load_image_rgb, resize_image

__all__ = ["FolderError", "ImageFileDataset", "folder_inception_outputs", "list_images"]


class FolderError(ValueError):
    """An image folder is missing, empty or holds an unreadable image."""


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, extensions case-insensitive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderError(f"'{folder}' is not a folder of images.")
    files = find_image_files(folder)  # the same files the training data loader would read
    if not files:
        raise FolderError(f"Folder '{folder}' contains no images (looked recursively for "
                          f"{', '.join(IMG_EXTENSIONS)}).")
    return files


class ImageFileDataset(Dataset):
    """Item ``i`` = ``(uint8 3 x 299 x 299, "")`` or, if the file cannot be read,
    ``(zeros, "path: reason")`` so the error reaches the main process with the file named."""

    def __init__(self, files: list[Path], resize: ResizeMethod = "bilinear") -> None:
        self.files = files
        self.resize = resize

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path = self.files[index]
        try:
            return resize_image(load_image_rgb(path), self.resize), ""
        except Exception as error:  # PIL raises many types for broken files
            return torch.zeros((3, INCEPTION_SIZE, INCEPTION_SIZE), dtype=torch.uint8), f"{path}: {error}"


def folder_inception_outputs(folder: str | os.PathLike, extractor: torch.nn.Module, resize: ResizeMethod = "bilinear",
                             batch_size: int = 50, num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, 2048], logits [N, 1008]) on the CPU for every image under ``folder``."""
    dataset = ImageFileDataset(list_images(folder), resize)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    device = next(extractor.parameters()).device
    features, logits = [], []
    with torch.no_grad():
        for images, errors in loader:
            bad = [error for error in errors if error]
            if bad:
                raise FolderError(f"Cannot read image {bad[0]}. Remove or fix the file and run again.")
            batch_features, batch_logits = extractor(images.to(device))
            features.append(batch_features.cpu())
            logits.append(batch_logits.cpu())
    return torch.cat(features), torch.cat(logits)

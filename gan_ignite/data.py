"""Datasets, transforms, the training loader and the fixed evaluation subset.

Every dataset is served as images only (labels are dropped): a GAN needs none. Image folders are
read by :class:`ImageFiles` rather than ``torchvision.datasets.ImageFolder`` because ImageFolder
rejects a flat folder of images (it needs class sub-folders) and aborts the whole run on the
first unreadable file; ``ImageFiles`` accepts both layouts and can skip corrupt files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import ignite.distributed as idist
import torch
import torchvision.datasets as tv_datasets
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets.folder import IMG_EXTENSIONS

from gan_ignite.errors import DataError
from gan_ignite.metrics.preprocess import wide_to_l

logger = logging.getLogger(__name__)
DATA_HELP = "See the 'Data' section of the README for the expected layout and how to download it."
TORCHVISION_DATASETS = {"cifar10": tv_datasets.CIFAR10, "mnist": tv_datasets.MNIST,
                        "fashion_mnist": tv_datasets.FashionMNIST}


class ConvertMode:
    """Convert any PIL mode (L, RGB, RGBA, P, I;16, ...) to ``L`` or ``RGB``; picklable for workers."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.mode == self.mode:
            return image
        if image.mode.startswith("I;16") or image.mode in ("I", "F"):
            image = wide_to_l(image)
        elif image.mode in ("P", "PA", "LA") and self.mode == "RGB":
            image = image.convert("RGBA")
        return image.convert(self.mode)


def build_transform(image_size: int, channels: int) -> Callable:
    """The seed's chain: Resize, CenterCrop, ToTensor, Normalize(0.5) -> tensors in [-1, 1]."""
    return T.Compose([
        ConvertMode("L" if channels == 1 else "RGB"),
        T.Resize(image_size),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize([0.5] * channels, [0.5] * channels),
    ])


def find_image_files(root: Path) -> list[Path]:
    extensions = tuple(IMG_EXTENSIONS)
    files = [Path(folder) / name for folder, _, names in os.walk(root, followlinks=True)
             for name in names if name.lower().endswith(extensions)]
    return sorted(files)


class ImageFiles(Dataset):
    """All image files under ``root`` (recursively, sorted), flat or in class sub-folders.

    With ``skip_bad_images`` an unreadable file yields ``None`` (dropped and counted by
    :func:`collate_images`); otherwise it raises :class:`DataError` naming the file.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable, skip_bad_images: bool = True):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"Dataset root '{self.root}' does not exist or is not a folder (data.root). "
                            f"Put the images there or point data.root at them. {DATA_HELP}")
        self.files = find_image_files(self.root)
        if not self.files:
            raise DataError(f"Dataset root '{self.root}' holds no image files ({', '.join(IMG_EXTENSIONS)}), "
                            f"searched recursively. Put the images there or point data.root at them. {DATA_HELP}")
        self.transform, self.skip_bad_images = transform, skip_bad_images

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Optional[torch.Tensor]:
        path = self.files[index]
        try:
            with Image.open(path) as image:
                image.load()
                return self.transform(image)
        except (OSError, ValueError, SyntaxError) as error:
            if self.skip_bad_images:
                logger.warning("Skipping unreadable image %s (%s)", path, error)
                return None
            raise DataError(f"Cannot read image file '{path}': {error}. Remove or replace the file, or set "
                            f"data.skip_bad_images=true to skip unreadable images.") from None


class ImagesOnly(Dataset):
    """Drop the labels of a torchvision dataset."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.dataset[index][0]


def collate_images(samples: Sequence[Optional[torch.Tensor]]) -> tuple[torch.Tensor, int]:
    """Stack the readable images; also return how many were skipped as unreadable."""
    images = [sample for sample in samples if sample is not None]
    if not images:
        raise DataError("Every image of a batch was unreadable; check the files under data.root. " + DATA_HELP)
    return torch.stack(images), len(samples) - len(images)


def _torchvision_dataset(name: str, root: str, download: bool, transform: Callable) -> Dataset:
    dataset_class = TORCHVISION_DATASETS[name]
    try:
        return ImagesOnly(dataset_class(root=root, train=True, download=download, transform=transform))
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError... depending on the failure
        how = ("the download failed" if download else "data.download is false")
        raise DataError(f"Dataset '{name}' was not found under data.root='{root}' and {how} ({error}). "
                        f"Download it on a machine with internet access and copy it there, or fix data.root. "
                        f"{DATA_HELP}") from None


def _celeba(root: str, download: bool, transform: Callable, skip_bad_images: bool) -> Dataset:
    """CelebA as an image folder at ``root`` (the seed's ``data/celeba``), else torchvision's loader."""
    folder = Path(root)
    try:
        return ImageFiles(folder, transform, skip_bad_images)
    except DataError:
        pass  # no images there: try torchvision's loader below
    try:
        dataset = tv_datasets.CelebA(root=str(folder.parent), split="all", download=download, transform=transform)
    except Exception as error:
        raise DataError(f"CelebA images were not found under data.root='{root}' and torchvision's CelebA loader "
                        f"failed ({error}). Put the aligned images (img_align_celeba/*.jpg) under '{root}'. "
                        f"{DATA_HELP}") from None
    return ImagesOnly(dataset)


def load_dataset(data_config) -> Dataset:
    """The full training dataset of images in [-1, 1], shaped (channels, image_size, image_size)."""
    transform = build_transform(data_config.image_size, data_config.channels)
    name, root = data_config.name, data_config.root
    if name == "imagefolder":
        return ImageFiles(root, transform, data_config.skip_bad_images)
    if name == "celeba":
        return _celeba(root, data_config.download, transform, data_config.skip_bad_images)
    return _torchvision_dataset(name, root, data_config.download, transform)


def first_items(dataset: Dataset, count: Optional[int]) -> Dataset:
    if count is None or count >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, range(count))


def train_loader(dataset: Dataset, data_config, batch_size: int) -> DataLoader:
    """Shuffled, ``drop_last`` loader; ``batch_size`` is global (idist splits it over processes)."""
    return idist.auto_dataloader(
        first_items(dataset, data_config.max_train_size), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=data_config.num_workers, collate_fn=collate_images, pin_memory=torch.cuda.is_available(),
        persistent_workers=data_config.num_workers > 0,
    )


def eval_loader(dataset: Dataset, num_samples: int, batch_size: int, num_workers: int) -> DataLoader:
    """This process's share of the first ``num_samples`` images, in order, with nothing padded or dropped.

    ``auto_dataloader``'s DistributedSampler would pad the shards with repeated images, which would
    change the real statistics; a strided split keeps every image exactly once over all ranks.
    """
    count = min(num_samples, len(dataset))  # type: ignore[arg-type]
    rank, world_size = idist.get_rank(), idist.get_world_size()
    shard = Subset(dataset, range(rank, count, world_size))
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_images)

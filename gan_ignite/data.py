"""Datasets (images only: a GAN needs no labels), transforms, the training loader, the decoded-image
cache and the fixed evaluation subset. Image folders are read by
:class:`~gan_ignite.metrics.networks.images.ImageFiles`, which, unlike torchvision's ImageFolder,
takes a flat folder too and skips unreadable files, whatever they are.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import ignite.distributed as idist
import numpy as np
import torch
import torchvision.datasets as tv_datasets
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from gan_ignite.errors import DataError
from gan_ignite.metrics._base import on_every_rank, rank0_first
from gan_ignite.metrics.networks.images import DATA_HELP, ConvertMode, ImageFiles
from gan_ignite.metrics.networks.preprocess import to_uint8
from gan_ignite.metrics.scores.real_stats import cache_key
from gan_ignite.io import atomic_write, open_temporary

logger = logging.getLogger(__name__)
TORCHVISION_DATASETS = {"cifar10": tv_datasets.CIFAR10, "mnist": tv_datasets.MNIST,
                        "fashion_mnist": tv_datasets.FashionMNIST}
TORCHVISION_FOLDERS = {"cifar10": "cifar-10-batches-py", "mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw"}
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "gan_ignite" / "stats"  # statistics and decoded images
# part of the cache keys: bump it when decoding, transforms, uint8 conversion or resizing change
PREPROCESS_VERSION = 2


def build_transform(image_size: int, channels: int) -> Callable:
    """The tutorial baseline's chain: Resize, CenterCrop, ToTensor, Normalize(0.5) -> tensors in [-1, 1]."""
    return T.Compose([ConvertMode("L" if channels == 1 else "RGB"), T.Resize(image_size), T.CenterCrop(image_size),
                      T.ToTensor(), T.Normalize([0.5] * channels, [0.5] * channels)])


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




def _celeba(root: str, download: bool, transform: Callable, skip_bad_images: bool) -> Dataset:
    """CelebA as an image folder at ``root`` (the tutorial baseline's ``data/celeba``), else torchvision's."""
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
    name, root = data_config.name, data_config.root
    if name in TORCHVISION_DATASETS:
        return ImagesOnly(load_labelled_dataset(data_config, train=True))
    transform = build_transform(data_config.image_size, data_config.channels)
    if name == "imagefolder":
        return ImageFiles(root, transform, data_config.skip_bad_images)
    return _celeba(root, data_config.download, transform, data_config.skip_bad_images)


def load_labelled_dataset(data_config, train: bool) -> Dataset:
    """The official train or test split of a labelled torchvision dataset, transformed as for training."""
    if data_config.name not in TORCHVISION_DATASETS:
        raise DataError(f"data.name='{data_config.name}' has no class labels; a classifier is trained on one of "
                        f"{', '.join(TORCHVISION_DATASETS)} (set data.name, data.root and data.download). {DATA_HELP}")
    transform = build_transform(data_config.image_size, data_config.channels)
    try:
        return TORCHVISION_DATASETS[data_config.name](root=data_config.root, train=train,
                                                      download=data_config.download, transform=transform)
    except Exception as error:  # torchvision raises RuntimeError, URLError, OSError... depending on the failure
        how = "the download failed" if data_config.download else "data.download is false"
        folder = TORCHVISION_FOLDERS[data_config.name]
        raise DataError(f"Dataset '{data_config.name}' was not found under data.root='{data_config.root}' and {how} "
                        f"({error}). Without internet: copy the folder torchvision writes ({folder}/) from a machine "
                        f"that has it into {data_config.root}/{folder}/ and add data.download=false, or point "
                        f"data.root at the folder that holds it. See docs/getting-started.md, 'Offline: data and "
                        f"Inception weights'.") from None


def load_dataset_everywhere(data_config) -> Dataset:
    """:func:`load_dataset` on every rank, rank 0 first (it may download); an error on any rank stops all."""
    return rank0_first(lambda: load_dataset(data_config))


def cache_dir(config) -> Path:
    return Path(config.eval.stats_cache_dir) if config.eval.stats_cache_dir else DEFAULT_CACHE_DIR


def training_set(dataset: Dataset, data_config) -> Dataset:
    """A seeded random sample of ``data.max_train_size`` images (:func:`reference_indices`), or all of them."""
    count = data_config.max_train_size
    if count is None or count >= len(dataset):  # type: ignore[arg-type]
        return dataset
    return Subset(dataset, reference_indices(len(dataset), count, data_config.subset_seed))  # type: ignore[arg-type]


def train_loader(dataset: Dataset, data_config, batch_size: int, cache_dir: Optional[Path] = None,
                 seed: int = 0) -> DataLoader:
    """Shuffled, ``drop_last`` loader of a global ``batch_size``, from :func:`cached_images` with ``data.cache``.

    The workers' base seed comes from a generator of its own (seeded by ``seed``), so that creating an
    iterator (a resumed run does; persistent workers of an uninterrupted run do not at later epochs)
    leaves the global RNG, from which the sampler draws each epoch's order, where it was: resumes with
    workers are exact. (Given to the DataLoader constructor, the generator would also draw the order.)"""
    images = training_set(dataset, data_config)
    if data_config.cache:
        images = cached_images(images, data_config, cache_dir or DEFAULT_CACHE_DIR)
    loader = idist.auto_dataloader(images, batch_size=batch_size, shuffle=True, drop_last=True,
                                   num_workers=data_config.num_workers, collate_fn=collate_images,
                                   pin_memory=torch.cuda.is_available(), persistent_workers=data_config.num_workers > 0)
    loader.generator = torch.Generator().manual_seed(seed)
    return loader


def shutdown_workers(loader: DataLoader) -> None:
    """Stop ``loader``'s persistent workers and pin-memory thread now: at interpreter exit PyTorch waits
    on each of them (pytorch/pytorch issue 81794)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None:
        getattr(iterator, "_shutdown_workers", lambda: None)()
        loader._iterator = None


class CachedImages(Dataset):
    """Training images from a memory-mapped uint8 ``.npy`` array, turned into the very values decoding
    would give (ToTensor + Normalize(0.5)); mapped lazily, so DataLoader workers share the page cache."""

    def __init__(self, path: Path, channels: int):
        self.path = path
        self.normalize = T.Normalize([0.5] * channels, [0.5] * channels)
        self._array: Optional[np.ndarray] = None
        self._length = int(np.load(path, mmap_mode="r").shape[0])

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self.normalize(torch.from_numpy(np.array(self._array[index])).float().div(255))


def cached_images(images: Dataset, data_config, cache_dir: Path) -> CachedImages:
    """``images`` decoded once into ``cache_dir/images_<key>.npy``, keyed like the statistics cache (file
    fingerprints, size, preprocessing and Pillow versions); rank 0 builds it, an error there stops all."""
    # a torchvision dataset's fingerprint covers its whole folder: a subset is named by its indices
    subset = cache_key({"indices": list(images.indices)}) if isinstance(images, Subset) else "all"
    key_parts = {"dataset": data_config.name, "root": str(Path(data_config.root).resolve()), "count": len(images),
                 "subset": subset, "files": dataset_fingerprint(images, range(len(images))),
                 "image_size": data_config.image_size, "channels": data_config.channels,
                 "preprocess_version": PREPROCESS_VERSION, "pillow": Image.__version__}
    path = Path(cache_dir) / f"images_{cache_key(key_parts)}.npy"
    shape = (data_config.channels, data_config.image_size, data_config.image_size)
    on_every_rank(lambda: _readable_image_cache(path, shape) or _build_image_cache(images, data_config, path),
                  run_here=idist.get_rank() == 0)
    return CachedImages(path, data_config.channels)


def _readable_image_cache(path: Path, image_shape: tuple[int, int, int]) -> bool:
    """Whether ``path`` holds a usable image cache; an unreadable one is a miss."""
    if not path.is_file():
        return False
    try:
        array = np.load(path, mmap_mode="r")
        usable = array.dtype == np.uint8 and array.ndim == 4 and tuple(array.shape[1:]) == image_shape
        reason = f"shape {array.shape}, dtype {array.dtype}"
    except (OSError, ValueError, EOFError) as error:
        usable, reason = False, str(error)
    if not usable:
        logger.warning("data.cache: ignoring the unreadable image cache %s (%s); decoding the images again", path,
                       reason)
    return usable


def _build_image_cache(images: Dataset, data_config, path: Path) -> None:
    logger.info("data.cache: decoding %d images once into %s", len(images), path)
    # a generator of its own: the seed iterating a DataLoader draws must not shift the global RNG stream
    loader = DataLoader(images, batch_size=256, num_workers=data_config.num_workers, collate_fn=collate_images,
                        generator=torch.Generator())
    shape = (len(images), data_config.channels, data_config.image_size, data_config.image_size)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary, handle = open_temporary(path)  # a new file of our own, never a planted link
        handle.close()
        array = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8, shape=shape)
        count = skipped = 0
        for batch, batch_skipped in loader:
            array[count:count + len(batch)] = to_uint8(batch).numpy()  # exact, see collate_uint8
            count, skipped = count + len(batch), skipped + batch_skipped
        array.flush()
        del array
        if skipped:  # unreadable files were dropped: keep only the decoded rows
            trimmed = np.load(temporary, mmap_mode="r")[:count]
            atomic_write(temporary, lambda handle: np.save(handle, trimmed))
            logger.warning("data.cache: %d unreadable image(s) left out", skipped)
        os.replace(temporary, path)
    except BaseException as error:  # a failed or interrupted build leaves no temporary file behind
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        if not isinstance(error, OSError):
            raise
        raise DataError(f"Could not write the decoded-image cache '{path}' ({error.strerror or error}). Set "
                        f"eval.stats_cache_dir to a writable folder with room for it, or data.cache=false.") from None


def reference_indices(length: int, count: int, seed: int) -> list[int]:
    """A seeded uniform random sample of ``count`` of ``0..length-1``, sorted; never "the first N":
    sorted image folders put whole classes first."""
    if count >= length:
        return list(range(length))
    chosen = torch.randperm(length, generator=torch.Generator().manual_seed(seed))[:count]
    return sorted(chosen.tolist())


def sample_images(dataset: Dataset, count: int, seed: int) -> torch.Tensor:
    """A seeded random sample of ``count`` readable images (the real-image grid)."""
    images, _ = collate_images([dataset[index] for index in reference_indices(len(dataset), count, seed)])
    return images


def shard_bounds(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``count`` items, in rank order."""
    return count * rank // world_size, count * (rank + 1) // world_size


def eval_loader(dataset: Dataset, indices: Sequence[int], batch_size: int, num_workers: int) -> DataLoader:
    """This process's contiguous share of ``indices``, in order, nothing padded or dropped (unlike a
    DistributedSampler, which would change the statistics and the order of the gathered features)."""
    start, stop = shard_bounds(len(indices), idist.get_rank(), idist.get_world_size())
    return DataLoader(Subset(dataset, list(indices[start:stop])), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, collate_fn=collate_uint8, pin_memory=torch.cuda.is_available())


def collate_uint8(samples: Sequence[Optional[torch.Tensor]]) -> tuple[torch.Tensor, int]:
    """:func:`collate_images` as uint8, a quarter of float32's bytes to move to a GPU; exact: the values
    came from uint8 / 255 through Normalize(0.5), far from any .5 tie."""
    images, skipped = collate_images(samples)
    return to_uint8(images), skipped


def dataset_fingerprint(dataset: Dataset, indices: Sequence[int], times: bool = True) -> str:
    """A hash of relative path, size and (with ``times``) modification time of the files behind
    ``dataset[indices]`` (of every file of the folder for torchvision datasets): touching one of them
    changes it; without ``times`` a copy of the same files elsewhere has the same fingerprint."""
    root, files = _files_behind(dataset, indices)
    digest = hashlib.sha256()
    for path in files:
        try:
            status = path.stat()
            facts = f"\0{status.st_size}" + (f"\0{status.st_mtime_ns}\n" if times else "\n")
        except OSError:  # gone since it was listed: counted as missing, the loader skips it
            facts = "\0missing\n"
        # os.fsencode: file names need not be UTF-8 (the bytes the file system holds, undecodable ones included)
        digest.update(os.fsencode(path.relative_to(root)) + facts.encode())
    return digest.hexdigest()[:16]


def _files_behind(dataset: Dataset, indices: Sequence[int]) -> tuple[Path, list[Path]]:
    if isinstance(dataset, Subset):
        return _files_behind(dataset.dataset, [dataset.indices[i] for i in indices])
    if isinstance(dataset, ImageFiles):
        return dataset.root, [dataset.files[i] for i in indices]
    inner = dataset.dataset if isinstance(dataset, ImagesOnly) else dataset
    folder = getattr(inner, "raw_folder", None)
    if folder is None and hasattr(inner, "base_folder"):
        folder = os.path.join(inner.root, inner.base_folder)
    if folder is None or not os.path.isdir(folder):
        raise DataError(f"Cannot tell which files the dataset {type(inner).__name__} was read from, so its "
                        f"statistics cannot be cached safely. {DATA_HELP}")
    root = Path(folder)
    return root, sorted(path for path in root.rglob("*") if path.is_file())

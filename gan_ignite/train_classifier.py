"""Train the domain classifier that serves as an offline feature network:
``python -m gan_ignite.train_classifier --config FILE [--out PATH] [--epochs N] [overrides ...]``.

It reads the same YAML the GAN trains with (``data.name`` one of fashion_mnist, mnist, cifar10;
``data.root``, ``data.download``, ``data.image_size``, ``data.channels``), trains a
:class:`~gan_ignite.metrics.networks.classifier.DomainClassifier` on the official training split with
Ignite's supervised trainer, measures its accuracy on the official test split after every epoch
with Ignite's supervised evaluator, and saves it with that accuracy. Then score with
``eval.feature_network=classifier:PATH`` (training, the evaluate CLI) or ``--feature-network
classifier:PATH`` (``python -m gan_ignite.metrics``): FID, IS, KID and PRDC in its feature and
class space, fully offline.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

from gan_ignite.command import main_for
from gan_ignite.config import load_config, out_of_range
from gan_ignite.errors import ConfigError
from gan_ignite.io import require_writable_folder

logger = logging.getLogger("gan_ignite")


def random_shift(images: Any, generator: Any, pixels: int = 2) -> Any:
    """Translate each image by up to ``pixels`` in x and y, filling with black (-1): the one
    augmentation that suits digits, clothes and CIFAR objects alike (no flips: they change digits)."""
    import torch
    import torch.nn.functional as F

    size = images.shape[-1]
    padded = F.pad(images, (pixels,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * pixels + 1, (len(images), 2), generator=generator).tolist()
    return torch.stack([padded[i, :, y:y + size, x:x + size] for i, (y, x) in enumerate(offsets)])


def labelled_loaders(config, batch_size: int, max_train: Optional[int],
                     max_test: Optional[int]) -> tuple[list, Any, Any]:
    """The class names and the loaders of the official train and test splits (or of their first images)."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from gan_ignite import data as data_module

    train_set = data_module.load_labelled_dataset(config.data, train=True)
    test_set = data_module.load_labelled_dataset(config.data, train=False)
    # seeded random samples, as data.max_train_size draws them, never "the first N"
    train_images = Subset(train_set, data_module.reference_indices(len(train_set), max_train, config.seed)) \
        if max_train else train_set
    test_images = Subset(test_set, data_module.reference_indices(len(test_set), max_test, config.seed)) \
        if max_test else test_set
    train_loader = DataLoader(train_images, batch_size=batch_size, shuffle=True, drop_last=True,
                              num_workers=config.data.num_workers, generator=torch.Generator().manual_seed(config.seed))
    test_loader = DataLoader(test_images, batch_size=512, num_workers=config.data.num_workers)
    return list(getattr(train_set, "classes", [])), train_loader, test_loader


def _shifted_batch(shifts: Any, batch: Any, device: Any, non_blocking: bool) -> tuple[Any, Any]:
    images, labels = batch
    return random_shift(images, shifts).to(device, non_blocking=non_blocking), labels.to(device)


def _logits(network: Any, images: Any) -> Any:
    return network(images)[1]


def train(config, out: Path, epochs: int, batch_size: int, lr: float, max_train: Optional[int],
          max_test: Optional[int]) -> dict[str, Any]:
    """Train, evaluate every epoch, save; returns the metadata saved with the classifier."""
    import torch
    from ignite.engine import Engine, Events, create_supervised_evaluator, create_supervised_trainer
    from ignite.handlers import ProgressBar
    from ignite.handlers.param_scheduler import LRScheduler
    from ignite.metrics import Accuracy, Loss

    from gan_ignite.metrics.networks.classifier import DomainClassifier, save_classifier

    data_config = config.data
    classes, train_loader, test_loader = labelled_loaders(config, batch_size, max_train, max_test)
    test_count = len(test_loader.dataset)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = DomainClassifier(data_config.channels, len(classes) or 10, input_size=data_config.image_size)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    prepare_batch = functools.partial(_shifted_batch, torch.Generator().manual_seed(config.seed))
    trainer = create_supervised_trainer(model, optimizer, torch.nn.CrossEntropyLoss(), device,
                                        prepare_batch=prepare_batch, model_fn=_logits)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(train_loader))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, LRScheduler(schedule, save_history=False))
    evaluator = create_supervised_evaluator(
        model, metrics={"accuracy": Accuracy(), "loss": Loss(torch.nn.CrossEntropyLoss())}, device=device,
        model_fn=_logits)
    if sys.stderr.isatty():
        ProgressBar(persist=False).attach(trainer, output_transform=lambda loss: {"loss": loss})
    accuracies: list[float] = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def _evaluate(engine: Engine) -> None:
        evaluator.run(test_loader)
        accuracies.append(evaluator.state.metrics["accuracy"])
        logger.info("Epoch %d/%d: test accuracy %.4f, test loss %.4f (%d test images)", engine.state.epoch, epochs,
                    accuracies[-1], evaluator.state.metrics["loss"], test_count)

    started = time.perf_counter()
    trainer.run(train_loader, max_epochs=epochs)
    metadata = {"dataset": str(data_config.name), "classes": classes, "image_size": data_config.image_size,
                "channels": data_config.channels, "test_accuracy": accuracies[-1], "test_images": test_count,
                "train_images": len(train_loader.dataset), "epochs": epochs,
                "train_seconds": round(time.perf_counter() - started, 1)}
    save_classifier(out, model.cpu(), **metadata)
    return metadata


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="the GAN's YAML config (its data.* section is used)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to save the classifier (default: classifiers/<data.name>_<size>px.pt)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--max-train-size", type=int, default=None, help="train on a seeded random sample of N training images")
    parser.add_argument("--max-test-size", type=int, default=None, help="measure on a seeded random sample of N test images")
    parser.add_argument("overrides", nargs="*",
                        help="dotted overrides, e.g. data.root=/path/to/datasets data.download=false")


def run(args: argparse.Namespace) -> int:
    from ignite.utils import manual_seed

    for option, key in (("epochs", "train.max_epochs"), ("batch_size", "train.batch_size"),
                        ("max_train_size", "data.max_train_size"), ("max_test_size", "data.max_train_size")):
        value = getattr(args, option)
        problem = None if value is None else out_of_range(key, value)
        if problem is not None:
            raise ConfigError(f"--{option.replace('_', '-')} {problem}.")
    config = load_config(args.config, args.overrides)
    out = args.out or Path("classifiers") / f"{config.data.name}_{config.data.image_size}px.pt"
    require_writable_folder(out.parent, f"--out '{out}' cannot be written", "Choose a writable path with --out PATH.")
    manual_seed(config.seed)
    metadata = train(config, out, args.epochs, args.batch_size, args.lr, args.max_train_size, args.max_test_size)
    print(f"Saved the {config.data.name} classifier (test accuracy {metadata['test_accuracy']:.2%} on "
          f"{metadata['test_images']} images, {metadata['train_seconds']} s) to {out}. Score with it: "
          f"eval.feature_network=classifier:{out} (training, python -m gan_ignite.evaluate) or "
          f"python -m gan_ignite.metrics A B --feature-network classifier:{out}")
    return 0


main = main_for(__name__)

if __name__ == "__main__":
    sys.exit(main())

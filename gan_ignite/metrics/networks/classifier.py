"""A small LeNet-like domain classifier as a feature network (features: its 128-d hidden layer; logits:
its classes) for offline FID / IS / KID / PRDC on domains far from ImageNet. Every image, also in its own
training, is converted to its channels (RGB to luma, ITU-R 601), resized (antialiased bilinear) and scaled to
[-1, 1]. Its file holds the weights, the architecture, the classes and its test accuracy; its tag is a hash.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gan_ignite.errors import FeatureNetworkError
from gan_ignite.io import atomic_write, load_torch_file

FORMAT = "gan_ignite.classifier/1"
LUMA = (0.299, 0.587, 0.114)


class DomainClassifier(nn.Module):
    """``images`` in [-1, 1] (N x C x S x S) -> ``(features [N, feature_dim], logits [N, classes])``."""

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 32, feature_dim: int = 128,
                 input_size: int = 32):
        super().__init__()
        if input_size % 4:
            raise ValueError(f"The classifier's input size must be a multiple of 4, got {input_size}.")
        self.arguments = {"channels": channels, "num_classes": num_classes, "width": width,
                          "feature_dim": feature_dim, "input_size": input_size}
        self.trunk = nn.Sequential(_block(channels, width), _block(width, 2 * width))
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * (input_size // 4) ** 2, feature_dim),
                                      nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # NHWC: faster than NCHW on a CPU (docs/performance.md)
        features = self.features(self.trunk(images.contiguous(memory_format=torch.channels_last)))
        return features, self.head(self.dropout(features))


def _block(incoming: int, outgoing: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(incoming, outgoing, 5, padding=2, bias=False), nn.BatchNorm2d(outgoing),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


def prepare_one_for_classifier(image: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    return prepare_for_classifier(image.unsqueeze(0), channels, size)[0]


def prepare_for_classifier(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """uint8 ``N x C x H x W`` (C = 1 or 3) -> float ``N x channels x size x size`` in [-1, 1]."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"The classifier expects uint8 N x C x H x W images with C in (1, 3), got {images.dtype} "
                         f"{tuple(images.shape)}.")
    x = images.float()
    if images.shape[1] == 3 and channels == 1:
        weights = torch.tensor(LUMA, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x * weights).sum(dim=1, keepdim=True)
    elif images.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x / 255.0 - 0.5) / 0.5


class ClassifierFeatures:
    """A trained :class:`DomainClassifier` behind its preprocessing, as a feature network."""

    def __init__(self, network: DomainClassifier, tag: str):
        self.network, self.tag = network.eval().requires_grad_(False), tag
        arguments = network.arguments
        self.num_features, self.num_classes = arguments["feature_dim"], arguments["num_classes"]
        self.input = {"channels": arguments["channels"], "size": arguments["input_size"]}
        self.prepare_one = functools.partial(prepare_one_for_classifier, **self.input)  # picklable, for loader workers

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return prepare_for_classifier(images.cpu(), **self.input)

    def __call__(self, prepared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            features, logits = self.network(prepared.to(self.device))
        return features.float(), logits.float()


def save_classifier(path: str | os.PathLike, network: DomainClassifier, **metadata: Any) -> Path:
    path = Path(path)
    content = {"format": FORMAT, "arguments": network.arguments, "state_dict": network.state_dict(), **metadata}
    atomic_write(path, lambda handle: torch.save(content, handle))
    return path


def load_classifier(path: str | os.PathLike) -> tuple[DomainClassifier, dict[str, Any]]:
    path = Path(path).expanduser()
    how = ("train one with python -m gan_ignite.train_classifier --config FILE, then pass "
           "eval.feature_network=classifier:/path/to/it.pt (or --feature-network for the folder CLI)")
    content = load_torch_file(path, "Classifier file", f"To get a good one: {how}.", FeatureNetworkError)
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise FeatureNetworkError(f"'{path}' is not a gan_ignite classifier file; {how}.")
    network = DomainClassifier(**_checked_arguments(content.get("arguments"), path, how))
    state = content.get("state_dict")
    try:
        if not isinstance(state, dict):
            raise TypeError(f"its state_dict is a {type(state).__name__}, not a dict of tensors")
        network.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as error:
        detail = " ".join(str(error).split())[:400]
        raise FeatureNetworkError(f"Classifier file '{path}' does not fit the classifier its arguments describe "
                                  f"({detail}); {how}.") from None
    network = network.to(memory_format=torch.channels_last)
    metadata = {key: value for key, value in content.items() if key not in ("state_dict", "arguments", "format")}
    return network.eval(), metadata


# each argument of DomainClassifier: (smallest, largest) value; larger would only allocate a huge network
ARGUMENT_RANGES = {"channels": (1, 3), "num_classes": (1, 100_000), "width": (1, 4096), "feature_dim": (1, 65_536),
                   "input_size": (4, 1024)}


def _checked_arguments(arguments: Any, path: Path, how: str) -> dict[str, int]:
    def refused(problem: str) -> FeatureNetworkError:
        return FeatureNetworkError(f"Classifier file '{path}' cannot be used: {problem}; {how}.")

    if not isinstance(arguments, dict) or set(arguments) != set(ARGUMENT_RANGES):
        raise refused(f"its arguments are {type(arguments).__name__} {_short(arguments)}, not "
                      f"{sorted(ARGUMENT_RANGES)}")
    for name, (low, high) in ARGUMENT_RANGES.items():
        value = arguments[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high or \
                (name == "channels" and value == 2) or (name == "input_size" and value % 4):
            raise refused(f"its argument {name} = {_short(value)} is not a valid value (an integer in [{low}, {high}])")
    return dict(arguments)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_classifier_features(path: str | os.PathLike, device: str | torch.device = "cpu") -> ClassifierFeatures:
    network, _ = load_classifier(path)
    digest = hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()[:12]
    return ClassifierFeatures(network.to(device), f"classifier-sha256-{digest}")

"""Feature networks, what turns images into the features and logits the metrics read, their registry
:data:`FEATURE_NETWORKS`, and running them over batches. Real, folder and generated images all go through
a network's own preprocessing."""

from __future__ import annotations

import collections
import functools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import torch

from gan_ignite.errors import FeatureNetworkError
from gan_ignite.metrics.networks.classifier import load_classifier_features
from gan_ignite.metrics.networks.embeddings import load_clip_features, load_dinov2_features
from gan_ignite.metrics.networks.inception import (NUM_CLASSES, NUM_FEATURES, effective_precision, load_fid_inception,
                                                   weights_tag)
from gan_ignite.metrics.networks.preprocess import (PROTOCOLS, finish_for_inception, prepare_for_inception,
                                                    stage_one_for_inception, to_device, to_uint8)
from gan_ignite.metrics.options import DEFAULT_PROTOCOL
from gan_ignite.metrics.options import FEATURE_NETWORKS as NETWORK_NAMES


class FeatureNetwork(Protocol):
    """``prepare_one``: one uint8 ``C x H x W`` image -> the picklable CPU part of the preprocessing (an
    optional ``finish`` takes a batch of those to the device); ``prepare``: a uint8 batch -> the input on
    the device; ``__call__``: -> ``(features [N, F], logits [N, K])``, float32 on the device, no grad."""

    tag: str  # for cache keys and records: values of other networks, weights or preprocessing are never compared
    num_features: int
    num_classes: int  # 0: no class logits, so no Inception Score
    device: torch.device

    def prepare_one(self, image: torch.Tensor) -> torch.Tensor: ...

    def prepare(self, images: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, prepared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


CPU_CHUNK = 16


class InceptionFeatures:
    """The FID Inception (or a module with its input contract) behind a protocol, at ``fp32`` or ``tf32`` (GPU)."""

    num_features = NUM_FEATURES

    def __init__(self, network: torch.nn.Module, protocol: str = DEFAULT_PROTOCOL, weights: str = "custom",
                 precision: str | None = None) -> None:
        self.network, self.protocol = network, protocol
        if precision is None:
            precision = "tf32" if getattr(network, "allow_tf32", False) else "fp32"
        self.precision = effective_precision(precision, self.device)
        if hasattr(network, "allow_tf32"):
            network.allow_tf32 = self.precision == "tf32"
        # no suffix for fp32: the tag of existing caches and statistics files
        self.tag = f"inception-{weights}-{protocol}" + ("-tf32" if self.precision == "tf32" else "")
        self.num_classes = NUM_CLASSES if getattr(network, "has_logits", True) else 0
        self.prepare_one = functools.partial(stage_one_for_inception, protocol=protocol)
        # on a GPU only a PIL stage (tutorial, clean-fid) is host work worth a producer thread
        self.host_work = self.device.type == "cpu" or PROTOCOLS[protocol].on_host is not None

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return prepare_for_inception(images, self.protocol, self.device)

    def finish(self, staged: torch.Tensor) -> torch.Tensor:
        return finish_for_inception(to_device(staged, self.device), self.protocol)

    def __call__(self, prepared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # on a CPU, chunks of 16 images keep the activations in cache (docs/performance.md)
        chunk = CPU_CHUNK if self.device.type == "cpu" else max(1, len(prepared))
        with torch.inference_mode():
            outputs = [self.network(to_device(part, self.device)) for part in prepared.split(chunk)]
        if len(outputs) == 1:
            return outputs[0]
        return torch.cat([features for features, _ in outputs]), torch.cat([logits for _, logits in outputs])


def prepare_images(images: torch.Tensor, network: FeatureNetwork) -> torch.Tensor:
    """Images in [-1, 1] (float ``N x C x H x W``) or uint8 -> the network's input batch."""
    return network.prepare(images if images.dtype == torch.uint8 else to_uint8(images))


def finish_staged(staged: torch.Tensor | list[torch.Tensor], network: FeatureNetwork) -> torch.Tensor:
    """``network.prepare_one`` results (stacked, or a list of different sizes) -> the network's input."""
    finish = getattr(network, "finish", None) or (lambda batch: to_device(batch, network.device))
    if isinstance(staged, torch.Tensor):
        return finish(staged)
    return torch.cat([finish(image.unsqueeze(0)) for image in staged])


def extract_features(images: torch.Tensor, network: FeatureNetwork) -> dict[str, torch.Tensor]:
    """Images in [-1, 1] (float ``N x C x H x W``) -> ``{"features", "logits"}`` on the network's device."""
    features, logits = network(prepare_images(images, network))
    return {"features": features, "logits": logits}


class Prefetch:
    """Iterate ``items`` in a background thread, ``depth`` items ahead of the consumer (batch k+1 is generated
    and resized while the network runs on batch k); the producer's exceptions are raised in the consumer."""

    def __init__(self, items: Iterable[Any], depth: int = 2) -> None:
        self.items, self.depth = items, depth

    def __iter__(self) -> Iterator[Any]:
        items, end = iter(self.items), object()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")  # one thread advances the iterator
        try:
            ahead = collections.deque(pool.submit(next, items, end) for _ in range(self.depth))
            while (item := ahead.popleft().result()) is not end:
                ahead.append(pool.submit(next, items, end))
                yield item
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _inception(argument: str, device: torch.device, *, inception_weights: str | os.PathLike | None = None,
               protocol: str = DEFAULT_PROTOCOL, precision: str = "fp32") -> InceptionFeatures:
    if argument:
        raise FeatureNetworkError(f"The feature network 'inception' takes no argument (got 'inception:{argument}'); "
                                  "its weights are set with eval.inception_weights / --inception-weights.")
    network = load_fid_inception(inception_weights, device, precision)
    return InceptionFeatures(network, protocol, weights_tag(inception_weights), precision)


def _from_file(name: str, what: str, load: Callable[..., FeatureNetwork]) -> Callable[..., FeatureNetwork]:
    def loader(argument: str, device: torch.device, **_: Any) -> FeatureNetwork:
        if not argument:
            raise FeatureNetworkError(f"The feature network '{name}' needs {what}.")
        return load(argument, device)
    return loader


# name -> loader(argument after "name:", device, **options); each name is also in options.FEATURE_NETWORKS
FEATURE_NETWORKS: dict[str, Callable[..., FeatureNetwork]] = {
    "inception": _inception,
    "classifier": _from_file("classifier", "the classifier's file: classifier:/path/to/classifier.pt (from python -m "
                                           "gan_ignite.train_classifier)", load_classifier_features),
    "dinov2": _from_file("dinov2", "Meta's checkpoint file: dinov2:/path/to/dinov2_vitl14_pretrain.pth",
                         load_dinov2_features),
    "clip": _from_file("clip", "OpenAI's checkpoint file: clip:/path/to/ViT-L-14-336px.pt", load_clip_features),
}
assert tuple(FEATURE_NETWORKS) == NETWORK_NAMES, "every feature network's name is listed in options.FEATURE_NETWORKS"


def load_feature_network(spec: str, device: str | torch.device = "cpu", **options) -> FeatureNetwork:
    """``spec`` = ``name`` or ``name:argument`` (e.g. ``inception``, ``classifier:/path/to/net.pt``)."""
    name, _, argument = spec.partition(":")
    if name not in FEATURE_NETWORKS:
        raise FeatureNetworkError(f"Unknown feature network '{spec}'; choose one of "
                                  f"{', '.join(sorted(FEATURE_NETWORKS))} (e.g. classifier:/path/to/classifier.pt).")
    return FEATURE_NETWORKS[name](argument, torch.device(device), **options)

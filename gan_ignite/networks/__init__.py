"""The generator and discriminator: the built-in architectures by name (``model.arch``), a user's
own classes by import path (``model.generator`` / ``model.discriminator``), and the contract every
pair keeps, checked once at start-up on the device (docs/networks.md).

The contract: a generator maps latents ``(N, model.latent_dim)`` to images ``(N, data.channels,
data.image_size, data.image_size)`` in [-1, 1]; a discriminator maps such images to ``(N,)`` or
``(N, 1)`` logits. A class path is ``package.module:Class`` (never a file path), built with its
``model.*_kwargs`` (and the run's latent_dim / channels / image_size for parameters of those names);
its module is imported only where the command allows it (:func:`build`).
Adding an architecture is one module and one line in :data:`ARCHITECTURES`.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Collection, Optional

import torch
from torch import nn

from gan_ignite.errors import ConfigError
from gan_ignite.networks import dcgan, resnet



@dataclass(frozen=True)
class Architecture:
    generator: Callable[[Any], nn.Module]  # the config -> a freshly initialised generator
    discriminator: Callable[[Any], nn.Module]


# name -> architecture. One line per architecture (and its name in gan_ignite.config.Arch).
ARCHITECTURES = {
    "dcgan": Architecture(
        lambda c: dcgan.Generator(c.model.latent_dim, c.data.channels, c.data.image_size, c.model.g_features),
        lambda c: dcgan.Discriminator(c.data.channels, c.data.image_size, c.model.d_features, c.model.spectral_norm)),
    "resnet": Architecture(
        lambda c: resnet.Generator(c.model.latent_dim, c.data.channels, c.data.image_size, c.model.g_features),
        lambda c: resnet.Discriminator(c.data.channels, c.data.image_size, c.model.d_features)),
}


def module_of(path: str) -> str:
    return path.partition(":")[0]


def allowed_modules(overrides: Collection[str], allow_import: Collection[str]) -> set[str]:
    """The modules a command line allows a run directory's config to import: ``--allow-import MODULE``
    and the modules of ``model.generator=`` / ``model.discriminator=`` given there."""
    named = [item.partition("=")[2].strip() for item in overrides
             if item.partition("=")[0].strip() in ("model.generator", "model.discriminator")]
    return set(allow_import) | {module_of(path) for path in named if path}


def import_class(path: str, key: str) -> type:
    """The ``nn.Module`` class ``package.module:Class`` names; a :class:`ConfigError` naming ``key``
    when it does not import or is not one."""
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # the user's module: any error while importing it is theirs to fix
        raise ConfigError(f"Invalid value for config key '{key}': module '{module_name}' of '{path}' does not import "
                          f"({type(error).__name__}: {error}). Put the package on PYTHONPATH (or install it) and name "
                          f"the class as package.module:Class.") from None
    found = getattr(module, class_name, None)
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        what = "not found" if found is None else f"a {type(found).__name__}, not an nn.Module class"
        raise ConfigError(f"Invalid value for config key '{key}': '{class_name}' in module '{module_name}' is {what}. "
                          f"Name a torch.nn.Module subclass as package.module:Class.")
    return found


def build(config: Any, role: str, allowed: Optional[Collection[str]] = None) -> nn.Module:
    """The ``role`` ("generator" or "discriminator") the config names, freshly initialised. ``allowed``:
    the modules a class path may import (None: any, for a config the user gave; a run directory's
    config, which may come from anywhere, needs them named on the command line)."""
    path = config.model[role]
    if path is None:
        return getattr(ARCHITECTURES[str(config.model.arch)], role)(config)
    if allowed is not None and module_of(path) not in allowed:
        raise ConfigError(
            f"The run's config names its own {role}, {path}: importing module '{module_of(path)}' would run its code, "
            f"and a run directory may come from anywhere. If you trust it, say so: pass model.{role}={path} on the "
            f"command line, or --allow-import {module_of(path)}. Nothing was imported.")
    cls = import_class(path, f"model.{role}")
    kwargs = dict(config.model[f"{role}_kwargs"])
    accepted = inspect.signature(cls).parameters
    for name, value in (("latent_dim", config.model.latent_dim), ("channels", config.data.channels),
                        ("image_size", config.data.image_size)):  # the run's settings, unless given
        if name in accepted and name not in kwargs:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"Invalid value for config key 'model.{role}_kwargs': {path}({kwargs}) fails: {error}.") from None


def build_models(config: Any, allowed: Optional[Collection[str]] = None) -> tuple[nn.Module, nn.Module]:
    """The generator and the discriminator (:func:`build`)."""
    return build(config, "generator", allowed), build(config, "discriminator", allowed)


def check_contract(generator: nn.Module, discriminator: nn.Module, config: Any, device: torch.device) -> None:
    """Two latents through G and its images through D, in eval mode without gradients (nothing in the
    models changes); a broken contract is one paragraph naming the shape or the values."""
    latent_dim, channels, size = config.model.latent_dim, config.data.channels, config.data.image_size
    latents = torch.randn(2, latent_dim, generator=torch.Generator().manual_seed(0)).to(device)
    modes = generator.training, discriminator.training
    generator.eval()
    discriminator.eval()
    try:
        with torch.no_grad():
            images = generator(latents)
            _check_images(images, (2, channels, size, size), config)
            logits = discriminator(images)
    finally:
        generator.train(modes[0])
        discriminator.train(modes[1])
    if tuple(logits.shape) not in ((2,), (2, 1)):
        raise ConfigError(f"The discriminator ({_name(config, 'discriminator')}) maps images of shape "
                          f"(2, {channels}, {size}, {size}) to {tuple(logits.shape)}, but a discriminator returns one "
                          f"logit per image: (2,) or (2, 1). See docs/networks.md.")


def _check_images(images: torch.Tensor, expected: tuple[int, ...], config: Any) -> None:
    name = _name(config, "generator")
    if tuple(images.shape) != expected:
        raise ConfigError(f"The generator ({name}) maps latents of shape (2, {config.model.latent_dim}) to "
                          f"{tuple(images.shape)}, but this run's images have shape {expected} (N, data.channels, "
                          f"data.image_size, data.image_size). See docs/networks.md.")
    if not torch.isfinite(images).all() or images.abs().max() > 1 + 1e-6:
        raise ConfigError(f"The generator ({name}) returns values in [{images.min():.4g}, {images.max():.4g}], but "
                          f"images are in [-1, 1] (end it with tanh). See docs/networks.md.")


def _name(config: Any, role: str) -> str:
    return config.model[role] or f"model.arch={config.model.arch}"

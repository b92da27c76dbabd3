"""CLIP image embeddings as a feature network, from a local copy of OpenAI's checkpoint:
``eval.feature_network=clip:/path/to/ViT-L-14-336px.pt`` (the space of CMMD, Jayasumana et al. 2024).

The file (OpenAI's TorchScript archive, or a plain state dict with OpenAI's key names) is read by
open_clip's ``load_openai_model`` (the optional ``clip`` extra), which builds the architecture from
the weights. As the CMMD authors' code prepares images: each one resized to the model's resolution
(336 x 336 for ViT-L/14@336) with a bicubic filter (PIL's), **no centre crop**, scaled to [0, 1] and
normalised with CLIP's mean and std; the feature is the L2-normalised image embedding
(``encode_image(..., normalize=True)``, 768-d for ViT-L/14@336).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gan_ignite.errors import FeatureNetworkError

__all__ = ["CLIP_MEAN", "CLIP_STD", "ClipFeatures", "load_clip_features", "prepare_for_clip"]

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


class PrepareForClip:
    """uint8 ``C x H x W`` (C = 1 or 3) -> float ``3 x size x size``; picklable for DataLoader workers."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return prepare_for_clip(image, self.size)


def prepare_for_clip(image: torch.Tensor, size: int = 336) -> torch.Tensor:
    """PIL bicubic resize of the whole image to ``size`` x ``size``, [0, 1], CLIP's normalisation."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"CLIP expects a uint8 C x H x W image with C in (1, 3), got {image.dtype} "
                         f"{tuple(image.shape)}.")
    pixels = np.ascontiguousarray(image.expand(3, -1, -1).permute(1, 2, 0).numpy())
    resized = Image.fromarray(pixels).resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)


class ClipFeatures:
    """An open_clip CLIP model's image tower behind the CMMD preprocessing (no class logits)."""

    num_classes = 0

    def __init__(self, model: torch.nn.Module, tag: str) -> None:
        self.model, self.tag = model.eval().requires_grad_(False), tag
        size = model.visual.image_size
        self.prepare_one = PrepareForClip(size[0] if isinstance(size, (tuple, list)) else int(size))
        self.num_features = int(model.visual.output_dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.prepare_one(image) for image in images.cpu()])

    def __call__(self, prepared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            features = self.model.encode_image(prepared.to(self.device), normalize=True).float()
        return features, features.new_zeros((features.shape[0], 0))


def load_clip_features(path: str | os.PathLike, device: str | torch.device = "cpu") -> ClipFeatures:
    """The CLIP feature network of OpenAI's checkpoint ``path``; a missing or unreadable file, or a
    missing open_clip, raises :class:`FeatureNetworkError` saying what to do."""
    path = Path(path).expanduser()
    how = ("download OpenAI's ViT-L-14-336px.pt (the file the clip package and open_clip's 'openai' weights "
           "use) and pass clip:/path/to/ViT-L-14-336px.pt")
    if not path.is_file():
        raise FeatureNetworkError(f"CLIP checkpoint '{path}' does not exist; {how}.")
    try:
        from open_clip import load_openai_model
    except ImportError:
        raise FeatureNetworkError("The feature network 'clip' needs open_clip: pip install 'gan_ignite[clip]' "
                                  "(or pip install open_clip_torch).") from None
    try:
        model = load_openai_model(str(path), precision="fp32", device=str(torch.device(device)))
    except Exception as error:  # torch / open_clip raise many types for corrupt or foreign files
        raise FeatureNetworkError(f"CLIP checkpoint '{path}' cannot be read as an OpenAI CLIP model "
                                  f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                                  f"{how}.") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return ClipFeatures(model, f"clip-sha256-{digest}")

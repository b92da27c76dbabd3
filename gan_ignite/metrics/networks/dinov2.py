"""DINOv2 (Oquab et al. 2023) as a feature network, from a local copy of Meta's checkpoint
(``dinov2_vit{s,b,l,g}14_pretrain.pth``): ``eval.feature_network=dinov2:/path/to/dinov2_vitl14_pretrain.pth``.

As dgm-eval (Stein et al. 2023, who found DINOv2 ViT-L/14 the feature space that ranks models as
people do) computes it: each image resized to 224 x 224 with PIL's bicubic filter (torchvision's
``Resize((224, 224), BICUBIC)`` on a PIL image), scaled to [0, 1], normalised with the ImageNet mean
and std; the feature is the CLS token after the final LayerNorm (what ``torch.hub``'s DINOv2 model
returns). The architecture is timm's ``vit_*_patch14_dinov2`` (the optional ``dinov2`` extra), its size
read from the file (embedding width 384 / 768 / 1024 / 1536 = ViT-S / B / L / g). Meta's models hold
a 37 x 37 position embedding (518-pixel inputs) that DINOv2 interpolates to the input's 16 x 16
patches at every forward; it is interpolated once here, with DINOv2's formula (bicubic, scale
factor (16 + 0.1) / 37, no antialiasing), so the 224-pixel forward is the same computation.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gan_ignite.errors import FeatureNetworkError
from gan_ignite.io import load_torch_file

__all__ = ["DINOV2_SIZES", "DinoV2Features", "interpolate_position_embedding", "load_dinov2_features",
           "prepare_for_dinov2"]

INPUT_SIZE, PATCH_SIZE = 224, 14
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# embedding width -> (Meta's name, timm's architecture)
DINOV2_SIZES = {384: ("vits14", "vit_small_patch14_dinov2"), 768: ("vitb14", "vit_base_patch14_dinov2"),
                1024: ("vitl14", "vit_large_patch14_dinov2"), 1536: ("vitg14", "vit_giant_patch14_dinov2")}
INTERPOLATE_OFFSET = 0.1  # DINOv2's interpolate_offset


def prepare_for_dinov2(image: torch.Tensor) -> torch.Tensor:
    """uint8 ``C x H x W`` (C = 1 or 3) -> float ``3 x 224 x 224``: PIL bicubic resize, ImageNet normalisation."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"DINOv2 expects a uint8 C x H x W image with C in (1, 3), got {image.dtype} "
                         f"{tuple(image.shape)}.")
    pixels = image.expand(3, -1, -1).permute(1, 2, 0).numpy()
    resized = Image.fromarray(np.ascontiguousarray(pixels)).resize((INPUT_SIZE, INPUT_SIZE), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def interpolate_position_embedding(position_embedding: torch.Tensor, patches: int = INPUT_SIZE // PATCH_SIZE
                                   ) -> torch.Tensor:
    """Meta's ``pos_embed`` [1, 1 + M*M, D] -> [1, 1 + patches^2, D], as DINOv2's ``interpolate_pos_encoding``."""
    cls_token, grid = position_embedding[:, :1].float(), position_embedding[:, 1:].float()
    side, dim = math.isqrt(grid.shape[1]), grid.shape[2]
    if side * side != grid.shape[1]:
        raise ValueError(f"pos_embed holds {grid.shape[1]} patch positions, not a square grid.")
    if side == patches:
        return position_embedding
    scale = (patches + INTERPOLATE_OFFSET) / side
    grid = torch.nn.functional.interpolate(grid.reshape(1, side, side, dim).permute(0, 3, 1, 2), mode="bicubic",
                                           antialias=False, scale_factor=(scale, scale))
    return torch.cat([cls_token, grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


class DinoV2Features:
    """A DINOv2 ViT behind dgm-eval's preprocessing, as a feature network (no class logits)."""

    num_classes = 0

    def __init__(self, network: torch.nn.Module, tag: str) -> None:
        self.network, self.tag = network.eval().requires_grad_(False), tag
        self.num_features = int(network.embed_dim)
        self.prepare_one = prepare_for_dinov2

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([prepare_for_dinov2(image) for image in images.cpu()])

    def __call__(self, prepared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            features = self.network.forward_features(prepared.to(self.device))[:, 0].float()
        return features, features.new_zeros((features.shape[0], 0))


def load_dinov2_features(path: str | os.PathLike, device: str | torch.device = "cpu") -> DinoV2Features:
    """The DINOv2 feature network of Meta's checkpoint ``path``; a missing, foreign or unreadable
    file, or a missing timm, raises :class:`FeatureNetworkError` saying what to do."""
    path = Path(path).expanduser()
    state = _read_checkpoint(path)
    width = state["cls_token"].shape[-1]
    if width not in DINOV2_SIZES:
        raise FeatureNetworkError(f"'{path}' holds a ViT of width {width}, not one of DINOv2's "
                                  f"({', '.join(f'{w}: {name}' for w, (name, _) in DINOV2_SIZES.items())}).")
    name, architecture = DINOV2_SIZES[width]
    network = _timm_dinov2(architecture)
    try:
        network.load_state_dict(_to_timm(state), strict=True)
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as error:  # wrong shapes, keys or types
        raise FeatureNetworkError(f"'{path}' does not fit DINOv2 {name} ({str(error).splitlines()[0]}): use Meta's "
                                  f"dinov2_vit{{s,b,l,g}}14_pretrain.pth unchanged.") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return DinoV2Features(network.to(device), f"dinov2-{name}-sha256-{digest}")


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    how = ("download Meta's dinov2_vitl14_pretrain.pth (or _vits14 / _vitb14 / _vitg14) from "
           "https://dl.fbaipublicfiles.com/dinov2/ and pass dinov2:/path/to/it.pth")
    state = load_torch_file(path, "DINOv2 checkpoint", f"To get a good one: {how}.", FeatureNetworkError)
    if not isinstance(state, dict) or "cls_token" not in state or "pos_embed" not in state:
        raise FeatureNetworkError(f"'{path}' is not a DINOv2 checkpoint (no cls_token / pos_embed); {how}.")
    wrong = [str(key) for key, value in state.items() if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if wrong or state["cls_token"].dim() < 1 or state["pos_embed"].dim() != 3:
        detail = f"entries that are not tensors: {', '.join(wrong[:5])}" if wrong else "cls_token / pos_embed shapes"
        raise FeatureNetworkError(f"'{path}' is not a DINOv2 checkpoint (wrong field types: {detail}); {how}.")
    return state


def _timm_dinov2(architecture: str) -> torch.nn.Module:
    try:
        import timm
    except ImportError:
        raise FeatureNetworkError("The feature network 'dinov2' needs timm: pip install 'gan_ignite[dinov2]' "
                                  "(or pip install timm).") from None
    return timm.create_model(architecture, pretrained=False, num_classes=0, img_size=INPUT_SIZE)


def _to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's key names -> timm's (the same but for ViT-g's fused SwiGLU), the position embedding for
    224-pixel inputs, no mask token (used in training only)."""
    renamed = {key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2."): value
               for key, value in state.items() if key != "mask_token"}
    renamed["pos_embed"] = interpolate_position_embedding(renamed["pos_embed"])
    return renamed

"""Image-embedding feature networks from local checkpoints (no class logits): DINOv2 (Meta's
``dinov2_vit*14_pretrain.pth``, built with timm; the CLS token at 224 pixels, as dgm-eval) and CLIP (OpenAI's
``ViT-L-14-336px.pt``, read by open_clip; the normalised image embedding, as CMMD's authors). The whole image
is resized with PIL's bicubic filter (no centre crop), scaled to [0, 1] and normalised.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gan_ignite.errors import FeatureNetworkError
from gan_ignite.io import load_torch_file

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DINOV2_INPUT_SIZE, DINOV2_PATCH_SIZE = 224, 14
# embedding width -> (Meta's name, timm's architecture)
DINOV2_SIZES = {384: ("vits14", "vit_small_patch14_dinov2"), 768: ("vitb14", "vit_base_patch14_dinov2"),
                1024: ("vitl14", "vit_large_patch14_dinov2"), 1536: ("vitg14", "vit_giant_patch14_dinov2")}
INTERPOLATE_OFFSET = 0.1  # DINOv2's interpolate_offset


def resize_and_normalise(image: torch.Tensor, size: int, mean: tuple, std: tuple, network: str) -> torch.Tensor:
    """uint8 ``C x H x W`` (C = 1 or 3) -> float ``3 x size x size``: PIL bicubic resize, [0, 1], normalised."""
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"{network} expects a uint8 C x H x W image with C in (1, 3), got {image.dtype} "
                         f"{tuple(image.shape)}.")
    pixels = np.ascontiguousarray(image.expand(3, -1, -1).permute(1, 2, 0).numpy())
    resized = Image.fromarray(pixels).resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


prepare_for_clip = functools.partial(resize_and_normalise, size=336, mean=CLIP_MEAN, std=CLIP_STD, network="CLIP")
prepare_for_dinov2 = functools.partial(resize_and_normalise, size=DINOV2_INPUT_SIZE, mean=IMAGENET_MEAN,
                                       std=IMAGENET_STD, network="DINOv2")


class EmbeddingFeatures:
    """``embed`` (a prepared batch -> embeddings) of ``network``, as a feature network."""

    num_classes = 0

    def __init__(self, network: torch.nn.Module, embed: Callable[[torch.Tensor], torch.Tensor],
                 prepare_one: Callable[[torch.Tensor], torch.Tensor], num_features: int, tag: str) -> None:
        self.network, self.tag = network.eval().requires_grad_(False), tag
        self.embed, self.prepare_one, self.num_features = embed, prepare_one, num_features

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.prepare_one(image) for image in images.cpu()])

    def __call__(self, prepared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            features = self.embed(prepared.to(self.device)).float()
        return features, features.new_zeros((features.shape[0], 0))


def load_clip_features(path: str | os.PathLike, device: str | torch.device = "cpu") -> EmbeddingFeatures:
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
    size = model.visual.image_size
    prepare_one = functools.partial(prepare_for_clip, size=size[0] if isinstance(size, (tuple, list)) else int(size))
    return EmbeddingFeatures(model, functools.partial(model.encode_image, normalize=True), prepare_one,
                             int(model.visual.output_dim), f"clip-sha256-{_digest(path)}")


def load_dinov2_features(path: str | os.PathLike, device: str | torch.device = "cpu") -> EmbeddingFeatures:
    path = Path(path).expanduser()
    state = _read_dinov2_checkpoint(path)
    width = state["cls_token"].shape[-1]
    if width not in DINOV2_SIZES:
        raise FeatureNetworkError(f"'{path}' holds a ViT of width {width}, not one of DINOv2's "
                                  f"({', '.join(f'{w}: {name}' for w, (name, _) in DINOV2_SIZES.items())}).")
    name, architecture = DINOV2_SIZES[width]
    try:
        import timm
    except ImportError:
        raise FeatureNetworkError("The feature network 'dinov2' needs timm: pip install 'gan_ignite[dinov2]' "
                                  "(or pip install timm).") from None
    network = timm.create_model(architecture, pretrained=False, num_classes=0, img_size=DINOV2_INPUT_SIZE)
    try:
        # Meta's key names are timm's but for ViT-g's fused SwiGLU; the mask token is used in training only
        renamed = {key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2."): value
                   for key, value in state.items() if key != "mask_token"}
        renamed["pos_embed"] = interpolate_position_embedding(renamed["pos_embed"])
        network.load_state_dict(renamed, strict=True)
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as error:  # wrong shapes, keys or types
        raise FeatureNetworkError(f"'{path}' does not fit DINOv2 {name} ({str(error).splitlines()[0]}): use "
                                  f"Meta's dinov2_vit{{s,b,l,g}}14_pretrain.pth unchanged.") from None
    return EmbeddingFeatures(network.to(device), lambda x: network.forward_features(x)[:, 0], prepare_for_dinov2,
                             int(network.embed_dim), f"dinov2-{name}-sha256-{_digest(path)}")


def interpolate_position_embedding(position_embedding: torch.Tensor,
                                   patches: int = DINOV2_INPUT_SIZE // DINOV2_PATCH_SIZE) -> torch.Tensor:
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


def _read_dinov2_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    how = ("download Meta's dinov2_vitl14_pretrain.pth (or _vits14 / _vitb14 / _vitg14) from "
           "https://dl.fbaipublicfiles.com/dinov2/ and pass dinov2:/path/to/it.pth")
    state = load_torch_file(path, "DINOv2 checkpoint", f"To get a good one: {how}.", FeatureNetworkError)
    if not isinstance(state, dict) or "cls_token" not in state or "pos_embed" not in state:
        raise FeatureNetworkError(f"'{path}' is not a DINOv2 checkpoint (no cls_token / pos_embed); {how}.")
    wrong = [str(key) for key, value in state.items()
             if not isinstance(key, str) or not isinstance(value, torch.Tensor)]
    if wrong or state["cls_token"].dim() < 1 or state["pos_embed"].dim() != 3:
        detail = f"entries that are not tensors: {', '.join(wrong[:5])}" if wrong else "cls_token / pos_embed shapes"
        raise FeatureNetworkError(f"'{path}' is not a DINOv2 checkpoint (wrong field types: {detail}); {how}.")
    return state


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]

"""DINOv2 from a local checkpoint file (``dinov2:PATH``): a random-init ViT-S/14 written in Meta's
format; skipped when the optional timm is not installed."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_shape_images
from gan_ignite.metrics.cli import main as metrics_cli
from gan_ignite.metrics.networks.embeddings import prepare_for_dinov2
from gan_ignite.metrics.scores.factory import feature_space
from gan_ignite.metrics.networks.features import FeatureNetworkError, load_feature_network

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def meta_checkpoint(tmp_path_factory):
    """(path, the 518-pixel model it was written from): Meta's key names, a 37 x 37 position embedding
    and the training-only mask token."""
    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0).eval()
    assert model.pos_embed.shape == (1, 1 + 37 * 37, 384)
    with torch.no_grad():  # random-init position embeddings and layer scales far from their zero-ish init
        model.pos_embed.normal_(std=0.5)
        for block in model.blocks:
            block.ls1.gamma.fill_(0.5)
            block.ls2.gamma.fill_(0.5)
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_vits14_pretrain.pth"
    torch.save({**model.state_dict(), "mask_token": torch.zeros(1, 384)}, path)
    return path, model


def _dinov2_forward_at_224(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """DINOv2's forward of a 224-pixel input, re-derived: patch tokens, CLS, the 37 x 37 position
    embedding interpolated as DINOv2's interpolate_pos_encoding does, blocks, LayerNorm, CLS token."""
    with torch.no_grad():
        patches = model.patch_embed.proj(images).flatten(2).transpose(1, 2)  # 16 x 16 patches of 14 pixels
        tokens = torch.cat([model.cls_token.expand(len(images), -1, -1), patches], dim=1)
        grid = model.pos_embed[:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
        grid = torch.nn.functional.interpolate(grid, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic",
                                               antialias=False)
        position = torch.cat([model.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 256, 384)], dim=1)
        return model.norm(model.blocks(tokens + position))[:, 0]


def test_dinov2_features_are_the_cls_token_of_dinov2s_224_pixel_forward(meta_checkpoint):
    path, model = meta_checkpoint
    network = load_feature_network(f"dinov2:{path}")
    assert network.num_features == 384 and network.num_classes == 0
    assert network.tag.startswith("dinov2-vits14-sha256-") and feature_space(network.tag) == "dinov2"
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    prepared = network.prepare(images)
    assert prepared.shape == (3, 3, 224, 224)
    features, logits = network(prepared)
    assert logits.shape == (3, 0)
    expected = _dinov2_forward_at_224(model, prepared)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)
    assert features.std(dim=0).mean() > 1e-2  # different images, different features


def test_preprocessing_is_dgm_evals_transform():
    from torchvision import transforms

    image = torch.randint(0, 256, (3, 40, 28), dtype=torch.uint8)
    dgm_eval = transforms.Compose([transforms.Resize((224, 224), transforms.InterpolationMode.BICUBIC),
                                   transforms.ToTensor(),
                                   transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    expected = dgm_eval(Image.fromarray(image.permute(1, 2, 0).numpy()))
    torch.testing.assert_close(prepare_for_dinov2(image), expected, rtol=0, atol=1e-6)
    gray = torch.randint(0, 256, (1, 20, 20), dtype=torch.uint8)
    torch.testing.assert_close(prepare_for_dinov2(gray), prepare_for_dinov2(gray.expand(3, -1, -1)))


def test_bad_files_and_a_missing_timm_are_explained(meta_checkpoint, tmp_path, monkeypatch):
    with pytest.raises(FeatureNetworkError, match="does not exist"):
        load_feature_network(f"dinov2:{tmp_path / 'missing.pth'}")
    foreign = tmp_path / "foreign.pth"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(FeatureNetworkError, match="not a DINOv2 checkpoint"):
        load_feature_network(f"dinov2:{foreign}")
    with pytest.raises(FeatureNetworkError, match="needs Meta's checkpoint"):
        load_feature_network("dinov2")
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(FeatureNetworkError, match=r"pip install 'gan_ignite\[dinov2\]'"):
        load_feature_network(f"dinov2:{meta_checkpoint[0]}")


def test_metrics_cli_scores_folders_in_dinov2_space(meta_checkpoint, tmp_path):
    for name, seed in (("a", 0), ("b", 1)):
        make_shape_images(tmp_path / name, 6, size=16, seed=seed)
    out = tmp_path / "r.json"
    assert metrics_cli([str(tmp_path / "a"), str(tmp_path / "b"), "--feature-network",
                        f"dinov2:{meta_checkpoint[0]}", "--metrics", "fd,vendi", "--device", "cpu",
                        "--num-workers", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"fd_dinov2", "vendi", "num_a", "num_b"}
    assert result["fd_dinov2"] > 0 and 1 <= result["vendi"] <= 6
    assert np.isfinite(list(result.values())).all()


def test_is_is_refused_with_dinov2_in_one_paragraph(meta_checkpoint):
    from gan_ignite.metrics.scores.factory import check_network_supports

    network = load_feature_network(f"dinov2:{meta_checkpoint[0]}")
    check_network_supports(["fd", "cmmd", "vendi"], network)
    with pytest.raises(FeatureNetworkError, match=r"IS needs class logits.*an embedding without a classifier"):
        check_network_supports(["fd", "is"], network)

"""CLIP from a local checkpoint file (``clip:PATH``): a small random-init CLIP written with OpenAI's
key names; skipped when the optional open_clip is not installed."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from PIL import Image

from conftest import make_shape_images
from gan_ignite.metrics.networks.embeddings import CLIP_MEAN, CLIP_STD, prepare_for_clip
from gan_ignite.metrics.cli import main as metrics_cli
from gan_ignite.metrics.networks.features import FeatureNetworkError, load_feature_network

open_clip = pytest.importorskip("open_clip")


@pytest.fixture(scope="module")
def openai_checkpoint(tmp_path_factory):
    """(path, model): a 2-layer ViT/14 at 336 pixels with a 1-layer text tower, OpenAI's state-dict layout."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=2, width=64, head_width=64, patch_size=14,
                                                        image_size=336),
                 text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
                 quick_gelu=True).eval()
    model = model.half().float()  # OpenAI's weights are fp16, and open_clip rebuilds them in fp16
    path = tmp_path_factory.mktemp("clip") / "ViT-tiny-14-336px.pt"
    torch.save(model.state_dict(), path)
    return path, model


def test_clip_features_are_the_normalised_image_embedding(openai_checkpoint):
    path, model = openai_checkpoint
    network = load_feature_network(f"clip:{path}")
    assert network.num_features == 32 and network.num_classes == 0 and network.tag.startswith("clip-sha256-")
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    prepared = network.prepare(images)
    assert prepared.shape == (3, 3, 336, 336)
    features, logits = network(prepared)
    assert logits.shape == (3, 0)
    with torch.no_grad():
        expected = model.encode_image(prepared)
    torch.testing.assert_close(features, expected / expected.norm(dim=1, keepdim=True), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(3))


def test_preprocessing_resizes_the_whole_image_without_a_centre_crop():
    from torchvision import transforms

    image = torch.randint(0, 256, (3, 48, 30), dtype=torch.uint8)  # not square: a crop would cut it
    expected = transforms.Compose([transforms.Resize((336, 336), transforms.InterpolationMode.BICUBIC),
                                   transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])(
        Image.fromarray(image.permute(1, 2, 0).numpy()))
    torch.testing.assert_close(prepare_for_clip(image), expected, rtol=0, atol=1e-6)


def test_bad_files_and_a_missing_open_clip_are_explained(openai_checkpoint, tmp_path, monkeypatch):
    with pytest.raises(FeatureNetworkError, match="does not exist"):
        load_feature_network(f"clip:{tmp_path / 'missing.pt'}")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(FeatureNetworkError, match="cannot be read as an OpenAI CLIP model"):
        load_feature_network(f"clip:{foreign}")
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(FeatureNetworkError, match=r"pip install 'gan_ignite\[clip\]'"):
        load_feature_network(f"clip:{openai_checkpoint[0]}")


def test_metrics_cli_gives_cmmd_in_clip_space(openai_checkpoint, tmp_path):
    for name, seed in (("a", 0), ("b", 1)):
        make_shape_images(tmp_path / name, 6, size=16, seed=seed)
    out = tmp_path / "r.json"
    assert metrics_cli([str(tmp_path / "a"), str(tmp_path / "b"), "--feature-network", f"clip:{openai_checkpoint[0]}",
                        "--metrics", "cmmd,fd", "--device", "cpu", "--num-workers", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"cmmd", "fd_clip", "num_a", "num_b"}
    assert result["cmmd"] > 0 and result["fd_clip"] > 0

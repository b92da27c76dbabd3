"""Images -> uint8 RGB 299x299, the same way for generated images and image files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gan_ignite.metrics.images import load_image_rgb
from gan_ignite.metrics.preprocess import resize_for_inception, to_uint8


def test_to_uint8_rounds_and_clamps():
    images = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 7)
    assert to_uint8(images).flatten().tolist() == [0, 0, 0, 128, 191, 255, 255]
    assert to_uint8(images).dtype == torch.uint8


@pytest.mark.parametrize("method, resample", [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)])
def test_resize_matches_pil_and_repeats_grayscale(method, resample):
    gray = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    resized = resize_for_inception(gray, method)
    assert resized.shape == (2, 3, 299, 299) and resized.dtype == torch.uint8
    expected = np.asarray(Image.fromarray(gray[1, 0].numpy()).resize((299, 299), resample))
    for channel in range(3):
        assert np.array_equal(resized[1, channel].numpy(), expected)


def test_images_already_299_are_untouched():
    images = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8)
    assert torch.equal(resize_for_inception(images), images)


def test_resize_rejects_float_input_and_unknown_method():
    with pytest.raises(ValueError, match="to_uint8"):
        resize_for_inception(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="bicubic"):
        resize_for_inception(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "lanczos")


def test_load_image_rgb_handles_modes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    base.save(tmp_path / "rgb.png")
    base.convert("RGBA").save(tmp_path / "rgba.png")
    base.convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "l.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(tmp_path / "i16.png")
    for name in ("rgb", "rgba"):
        assert np.array_equal(load_image_rgb(tmp_path / f"{name}.png").permute(1, 2, 0).numpy(), rgb)
    for name in ("l", "i16"):  # 16-bit is scaled to 8-bit, not clipped
        loaded = load_image_rgb(tmp_path / f"{name}.png")
        assert loaded.shape == (3, 5, 6) and torch.equal(loaded[0], torch.from_numpy(rgb[..., 0]))
        assert torch.equal(loaded[0], loaded[2])
    assert load_image_rgb(tmp_path / "p.png").shape == (3, 5, 6)

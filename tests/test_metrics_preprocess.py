"""Images -> the FID Inception's input by protocol, the same way for generated images and image files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cleanfid.resize import make_resizer
from PIL import Image
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torchvision.transforms.functional import to_tensor

from gan_ignite.metrics.networks.images import load_image_rgb
from gan_ignite.metrics.networks.preprocess import PROTOCOLS, prepare_for_inception, tensorflow1_bilinear, to_uint8


def test_to_uint8_rounds_and_clamps():
    images = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 7)
    assert to_uint8(images).flatten().tolist() == [0, 0, 0, 128, 191, 255, 255]
    assert to_uint8(images).dtype == torch.uint8


def _rgb_and_gray(size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=generator),
            torch.randint(0, 256, (2, 1, size + 5, size + 5), dtype=torch.uint8, generator=generator))


def test_tutorial_is_pil_bilinear_then_pytorch_fids_scaling():
    for images in _rgb_and_gray():
        prepared = prepare_for_inception(images, "tutorial")
        assert prepared.shape == (2, 3, 299, 299) and prepared.dtype == torch.float32
        pil = Image.fromarray(images[1].permute(1, 2, 0).squeeze(2).numpy()).convert("RGB")
        expected = 2 * to_tensor(pil.resize((299, 299), Image.BILINEAR)) - 1
        assert torch.equal(prepared[1], expected)


def test_clean_fid_equals_clean_fids_own_resizer_bit_for_bit():
    resize = make_resizer("PIL", False, "bicubic", (299, 299))  # clean-fid's mode "clean"
    for images in _rgb_and_gray():
        prepared = prepare_for_inception(images, "clean-fid")
        rgb = images[0].expand(3, -1, -1).permute(1, 2, 0).numpy()  # clean-fid converts to RGB first
        expected = (torch.from_numpy(resize(rgb)).permute(2, 0, 1) - 128) / 128  # its InceptionV3W's scaling
        assert torch.equal(prepared[0], expected)
        assert prepared.min() >= -1 and prepared.max() <= 127 / 128  # clipped to 0..255 before scaling


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (1, 3, 30, 41), (1, 3, 512, 400), (1, 3, 299, 299)])
def test_tensorflow1_bilinear_is_torch_fidelitys_bit_for_bit(shape):
    images = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(1)).float()
    expected = interpolate_bilinear_2d_like_tensorflow1x(images, size=(299, 299), align_corners=False)
    assert torch.equal(tensorflow1_bilinear(images), expected)


def test_every_protocol_gives_another_input_of_a_small_image():
    images, _ = _rgb_and_gray()
    prepared = {name: prepare_for_inception(images, name) for name in PROTOCOLS}
    names = list(prepared)
    for index, first in enumerate(names):
        for second in names[index + 1:]:
            assert (prepared[first] - prepared[second]).abs().max() > 1e-3, (first, second)


def test_images_already_299_keep_their_pixels_in_every_protocol():
    images = torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8)
    pixels = images.float()
    for name in PROTOCOLS:
        scaled = prepare_for_inception(images, name)
        expected = 2 * (pixels / 255) - 1 if name in ("tutorial", "pytorch-fid") else (pixels - 128) / 128
        assert torch.equal(scaled, expected), name
    one_image = prepare_for_inception(images[1].unsqueeze(0), "clean-fid")[0]
    assert torch.equal(one_image, prepare_for_inception(images, "clean-fid")[1])


def test_prepare_rejects_float_input():
    with pytest.raises(ValueError, match="to_uint8"):
        prepare_for_inception(torch.rand(1, 3, 8, 8))


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

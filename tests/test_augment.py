import io

import pytest
import torch
from ignite.engine import Engine

from gan_ignite.augment import AUGMENTS, AdaAugment, AdaController, DiffAugment, build_augment, cutout, translate, warp


def pipe(name: str, p: float = 1.0) -> torch.nn.Module:
    augment = build_augment(name)
    if isinstance(augment, AdaAugment):
        augment.p = p
    return augment


def extreme_images(n: int = 16, channels: int = 3, size: int = 32) -> torch.Tensor:
    """Half the pixels at exactly -1 or +1: colour transforms push them out of range unless clamped."""
    torch.manual_seed(0)
    images = torch.rand(n, channels, size, size) * 2 - 1
    return torch.where(torch.rand_like(images) < 0.5, images.sign(), images)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", ["diffaugment", "ada"])
def test_augmentations_are_differentiable_and_stay_in_range(name, channels):
    images = extreme_images(channels=channels).requires_grad_()
    augmented = pipe(name)(images)
    assert augmented.shape == images.shape
    assert augmented.min() >= -1 and augmented.max() <= 1
    (augmented * torch.randn_like(augmented)).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert not torch.equal(augmented, images)


@pytest.mark.parametrize("name", ["diffaugment", "ada"])
def test_each_sample_gets_its_own_random_draw(name):
    images = extreme_images(n=1).repeat(8, 1, 1, 1)
    augmented = pipe(name)(images).flatten(1)
    assert len({tuple(row.tolist()) for row in augmented}) == 8


def test_none_is_the_identity():
    images = extreme_images()
    assert pipe("none")(images) is images
    assert set(AUGMENTS) == {"none", "diffaugment", "ada"}


def test_translate_moves_by_whole_pixels_and_pads_with_zeros():
    image = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    moved = translate(image, torch.tensor([1]), torch.tensor([-2]))  # one row down, two columns left
    expected = torch.tensor([[0, 0, 0, 0], [3, 4, 0, 0], [7, 8, 0, 0], [11, 12, 0, 0]], dtype=torch.float32)
    assert torch.equal(moved[0, 0], expected)


def test_cutout_zeroes_a_square_clipped_at_the_border():
    images = torch.ones(1, 2, 8, 8)
    cut = cutout(images, top=torch.tensor([-2]), left=torch.tensor([5]), size=4)
    assert torch.equal(cut[0, 0], cut[0, 1])
    assert torch.equal(cut[0, 0, :2, 5:], torch.zeros(2, 3))
    assert cut.sum() == 2 * (64 - 6)


def test_diffaugment_shifts_by_up_to_an_eighth_and_cuts_half_the_size():
    torch.manual_seed(0)
    augment, ones = DiffAugment(), torch.ones(200, 1, 32, 32)
    zero_rows = (augment.translation(ones)[:, 0].sum(dim=2) == 0).sum(dim=1)
    assert zero_rows.max() == 4 and zero_rows.min() == 0  # 32 / 8 = 4 rows of zero padding at most
    cut_area = (augment.cutout(ones) == 0).sum(dim=(1, 2, 3))
    assert cut_area.max() == 16 * 16 and cut_area.min() > 0


def test_ada_is_the_identity_at_p_zero():
    images = extreme_images()
    assert torch.equal(pipe("ada", p=0.0)(images), images)


def test_ada_warp_flips_and_translates_with_reflection():
    images = extreme_images(n=2, size=8)
    flip = torch.tensor([[-1.0, 0, 0], [0, 1, 0]]).repeat(2, 1, 1)
    assert torch.allclose(warp(images, flip), images.flip(3), atol=1e-6)
    one_pixel = torch.tensor([[1.0, 0, 2 / 8], [0, 1, 0]]).repeat(2, 1, 1)  # sample one pixel to the right
    expected = torch.cat([images[..., 1:], images[..., -1:]], dim=3)  # the border pixel reflected
    assert torch.allclose(warp(images, one_pixel), expected, atol=1e-6)


def test_ada_applies_transforms_with_probability_p():
    torch.manual_seed(0)
    images = extreme_images(n=1, channels=1).repeat(1000, 1, 1, 1)
    for p in (0.1, 0.5):
        untouched = (pipe("ada", p)(images) == images).flatten(1).all(dim=1).float().mean().item()
        # a grayscale sample escapes translate/zoom/rotate/brightness/contrast with (1 - p)^5 and the
        # flip with 1 - p/2 (a flip is drawn with p, then flips half of the time, as in StyleGAN2-ADA)
        assert untouched == pytest.approx((1 - p / 2) * (1 - p) ** 5, abs=0.045)


def controller(p: float = 0.0, **kwargs) -> AdaController:
    settings = {"target": 0.6, "speed_images": 1000, "interval": 4, **kwargs}
    return AdaController(AdaAugment(p), **settings)


def test_ada_p_rises_when_d_is_sure_of_the_reals_and_falls_otherwise():
    rising = controller()
    for _ in range(3):
        rising.accumulate(1.0, 8)
    assert rising.p == 0.0  # nothing before `interval` iterations
    rising.accumulate(1.0, 8)
    assert rising.p == pytest.approx(4 * 8 / 1000)
    falling = controller(p=0.5)
    for _ in range(4):
        falling.accumulate(0.2, 8)
    assert falling.p == pytest.approx(0.5 - 4 * 8 / 1000)
    steady = controller(p=0.5)
    for sign_mean in (1.0, 0.2, 0.6, 0.6):  # r_t == target exactly
        steady.accumulate(sign_mean, 8)
    assert steady.p == 0.5


def test_ada_p_stays_in_zero_one():
    low, high = controller(p=0.0), controller(p=0.99)
    for _ in range(8):
        low.accumulate(-1.0, 8)
        high.accumulate(1.0, 8)
    assert (low.p, high.p) == (0.0, 1.0)
    assert high.augment.p == 1.0


def test_ada_controller_state_round_trips_mid_interval():
    uninterrupted, first_half = controller(), controller()
    for ada in (uninterrupted, first_half):
        for sign_mean in (1.0, 0.9, 0.8, 1.0, 0.5, 1.0):
            ada.accumulate(sign_mean, 8)
    buffer = io.BytesIO()
    torch.save(first_half.state_dict(), buffer)
    resumed = controller()
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    for ada in (uninterrupted, resumed):
        for sign_mean in (0.9, 0.9, 1.0):
            ada.accumulate(sign_mean, 8)
    assert resumed.state_dict() == uninterrupted.state_dict()
    assert uninterrupted.p == pytest.approx(2 * 32 / 1000)


def test_ada_controller_follows_the_trainers_real_sign_output():
    ada = controller()
    trainer = Engine(lambda engine, batch: {"real_sign": 1.0})
    ada.attach(trainer)
    trainer.run([(torch.zeros(8, 1, 4, 4), 0)] * 8, max_epochs=1)
    assert ada.p == pytest.approx(2 * 4 * 8 / 1000)

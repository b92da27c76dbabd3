"""The SNGAN ResNet generator and discriminator of gan_ignite.networks.resnet."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from gan_ignite.networks.resnet import DBlock, Discriminator, GBlock, Generator


def _count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _small(channels: int, image_size: int, latent_dim: int = 16) -> tuple[Generator, Discriminator]:
    features = 16 if image_size == 32 else 32  # at 64 / 128 px the narrowest layer is features / 16
    return (Generator(latent_dim, channels, image_size, features),
            Discriminator(channels, image_size, features))


@pytest.mark.parametrize("image_size", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_output_ranges(image_size, channels):
    torch.manual_seed(0)
    generator, discriminator = _small(channels, image_size)
    images = generator(torch.randn(3, 16))
    assert images.shape == (3, channels, image_size, image_size)
    assert images.min() >= -1 and images.max() <= 1
    logits = discriminator(images)
    assert logits.shape == (3, 1)
    assert torch.isfinite(logits).all()


def test_parameter_counts_match_mimicry_at_the_paper_widths():
    # kwotsin/mimicry 0.1.16 (PyPI), SNGANGenerator32/64/128 and SNGANDiscriminator32/64/128 with their
    # defaults (nz=128, 3 channels; ngf=256, ndf=128 at 32 px, ngf=ndf=1024 at 64 / 128 px), counted
    # with sum(p.numel() for p in model.parameters()). pytorch-gan-collections' ResGenerator32 has
    # 4,276,739 too; its ResDiscriminator32 has 1,053,824 (no bias in the last linear layer).
    assert _count(Generator(128, 3, 32, 256)) == 4_276_739
    assert _count(Discriminator(3, 32, 128)) == 1_053_825
    assert _count(Generator(128, 3, 64, 1024)) == 12_220_675
    assert _count(Discriminator(3, 64, 1024)) == 10_141_441
    assert _count(Generator(128, 3, 128, 1024)) == 32_150_787
    assert _count(Discriminator(3, 128, 1024)) == 29_017_857


@pytest.mark.parametrize("image_size", [32, 128])
def test_every_conv_and_linear_layer_of_the_discriminator_is_spectrally_normalised(image_size):
    _, discriminator = _small(3, image_size)
    layers = [module for module in discriminator.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    # two 3x3 convolutions a block, a 1x1 shortcut in each block that downsamples, the linear head
    assert len(layers) == {32: 2 * 4 + 2 + 1, 128: 2 * 6 + 5 + 1}[image_size]
    for layer in layers:
        assert parametrize.is_parametrized(layer, "weight")
        assert type(layer.parametrizations.weight[0]).__name__ == "_SpectralNorm"


def test_one_training_step_changes_the_weights_with_finite_losses():
    torch.manual_seed(0)
    generator, discriminator = _small(1, 32)
    g_optimizer = torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.5, 0.999))
    d_optimizer = torch.optim.Adam(discriminator.parameters(), 2e-4, betas=(0.5, 0.999))
    before = {name: p.detach().clone() for model in (generator, discriminator) for name, p in
              [(f"{type(model).__name__}.{n}", p) for n, p in model.named_parameters()]}
    real, latents = torch.rand(8, 1, 32, 32) * 2 - 1, torch.randn(8, 16)

    fake = generator(latents)
    real_logits, fake_logits = discriminator(real), discriminator(fake.detach())
    d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
              + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    d_optimizer.zero_grad()
    d_loss.backward()
    d_optimizer.step()
    fake_logits = discriminator(fake)
    g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    g_optimizer.zero_grad()
    g_loss.backward()
    g_optimizer.step()

    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    for model in (generator, discriminator):
        for name, parameter in model.named_parameters():
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
            # biases right before a BatchNorm get no gradient; every weight must move
            if not name.endswith("bias"):
                assert not torch.equal(parameter, before[f"{type(model).__name__}.{name}"]), name


def test_same_seed_same_weights():
    def build():
        torch.manual_seed(1)
        return _small(3, 64)

    (g1, d1), (g2, d2) = build(), build()
    for first, second in ((g1, g2), (d1, d2)):
        state1, state2 = first.state_dict(), second.state_dict()
        assert state1.keys() == state2.keys()
        assert all(torch.equal(state1[key], state2[key]) for key in state1)  # includes SN's u and v
    torch.manual_seed(2)
    g3, _ = _small(3, 64)
    assert not torch.equal(g1.linear.weight, g3.linear.weight)


def test_flat_and_four_dimensional_latents_give_the_same_images():
    torch.manual_seed(0)
    generator, _ = _small(3, 32)
    generator.eval()
    latents = torch.randn(5, 16)
    with torch.no_grad():
        assert torch.equal(generator(latents), generator(latents.view(5, 16, 1, 1)))


def test_shortcuts_match_the_references_order_of_resampling_and_1x1_convolution():
    # the references upsample before and pool after the shortcut's 1x1 convolution; the blocks
    # swap the order, which is the same function
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    g_shortcut = GBlock(8, 4).shortcut
    torch.testing.assert_close(g_shortcut(x), g_shortcut[0](F.interpolate(x, scale_factor=2, mode="nearest")))
    d_shortcut = DBlock(8, 4, downsample=True).shortcut
    torch.testing.assert_close(d_shortcut(x), F.avg_pool2d(d_shortcut[1](x), 2))


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 48}, "image_size must be one of"),
    ({"channels": 2}, "channels must be one of"),
    ({"image_size": 64, "features": 24}, "features must be a positive multiple of 16"),
    ({"features": 0}, "features must be a positive multiple"),
])
def test_unsupported_arguments_raise_value_error(kwargs, message):
    for model in (Generator, Discriminator):
        with pytest.raises(ValueError, match=message):
            model(**kwargs)

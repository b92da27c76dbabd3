import math

import pytest
import torch
from torch import nn

from gan_ignite.losses import LOSSES, get_loss

REAL = [2.0, -1.0, 0.5]
FAKE = [-3.0, 0.25, 1.5]


def logits(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def hand_bce_d() -> float:
    return mean(-math.log(sigmoid(x)) for x in REAL) + mean(-math.log(1 - sigmoid(x)) for x in FAKE)


def hand_bce_g() -> float:
    return mean(-math.log(sigmoid(x)) for x in FAKE)


def hand_hinge_d() -> float:
    return mean(max(0.0, 1 - x) for x in REAL) + mean(max(0.0, 1 + x) for x in FAKE)


def hand_hinge_g() -> float:
    return -mean(FAKE)


@pytest.mark.parametrize("name, d_value, g_value", [
    ("bce", hand_bce_d, hand_bce_g),
    ("non_saturating", hand_bce_d, hand_bce_g),  # the same objective, computed on logits
    ("hinge", hand_hinge_d, hand_hinge_g),
])
def test_loss_values_match_a_hand_computation(name, d_value, g_value):
    loss = get_loss(name)
    assert loss.discriminator(logits(REAL), logits(FAKE)).item() == pytest.approx(d_value(), rel=1e-12)
    assert loss.generator(logits(FAKE)).item() == pytest.approx(g_value(), rel=1e-12)


def test_hinge_is_zero_for_a_discriminator_beyond_the_margins():
    loss = get_loss("hinge")
    assert loss.discriminator(logits([1.0, 3.0]), logits([-1.0, -2.5])).item() == 0.0


def test_bce_is_the_seeds_bce_loss_on_sigmoid_outputs_bit_for_bit():
    torch.manual_seed(0)
    real, fake = torch.randn(64) * 4, torch.randn(64) * 4
    criterion = nn.BCELoss()
    expected_d = criterion(torch.sigmoid(real), torch.ones(64)) + criterion(torch.sigmoid(fake), torch.zeros(64))
    assert torch.equal(get_loss("bce").discriminator(real, fake), expected_d)
    assert torch.equal(get_loss("bce").generator(fake), criterion(torch.sigmoid(fake), torch.ones(64)))


def test_non_saturating_stays_finite_where_bce_saturates():
    huge = torch.tensor([-200.0], requires_grad=True)
    loss = get_loss("non_saturating").generator(huge)
    loss.backward()
    assert loss.item() == pytest.approx(200.0)  # bce's clamped log would report 100 and no gradient
    assert huge.grad.item() == pytest.approx(-1.0)
    assert get_loss("bce").generator(torch.tensor([-200.0])).item() == pytest.approx(100.0)


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match=", ".join(LOSSES)):
        get_loss("wasserstein")

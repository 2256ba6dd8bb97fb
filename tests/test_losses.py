"""Adversarial losses, the gradient penalty and D's accuracy against hand computations and slow references."""

import math

import pytest
import torch
import torch.nn.functional as F

from specgan.errors import ConfigError
from specgan.losses import LOSSES, d_accuracy, d_loss, g_loss, gradient_penalty
from specgan.models.dcgan import Discriminator

REAL = torch.tensor([2.0, -0.5, 0.3, 1.5], dtype=torch.float64)
FAKE = torch.tensor([-1.0, 0.7, -3.0, 0.2], dtype=torch.float64)


def test_registry_names():
    assert tuple(LOSSES) == ("bce", "lsgan", "hinge", "wgan")
    with pytest.raises(ConfigError, match=r"train.loss = 'mse': must be one of bce, lsgan, hinge, wgan"):
        d_loss("mse", REAL, FAKE)
    with pytest.raises(ConfigError, match="must be one of"):
        g_loss("mse", FAKE)


def test_bce_against_probabilities():
    p_real, p_fake = torch.sigmoid(REAL), torch.sigmoid(FAKE)
    expected_d = (F.binary_cross_entropy(p_real, torch.ones(4, dtype=torch.float64))
                  + F.binary_cross_entropy(p_fake, torch.zeros(4, dtype=torch.float64)))
    torch.testing.assert_close(d_loss("bce", REAL, FAKE), expected_d)
    torch.testing.assert_close(g_loss("bce", FAKE), F.binary_cross_entropy(p_fake, torch.ones(4, dtype=torch.float64)))
    # and by hand: -mean log σ(real) - mean log(1 - σ(fake))
    by_hand = (-sum(math.log(1 / (1 + math.exp(-r))) for r in REAL.tolist()) / 4
               - sum(math.log(1 - 1 / (1 + math.exp(-f))) for f in FAKE.tolist()) / 4)
    assert d_loss("bce", REAL, FAKE).item() == pytest.approx(by_hand, rel=1e-12)


def test_lsgan_by_hand():
    expected_d = 0.5 * sum((r - 1) ** 2 for r in REAL.tolist()) / 4 + 0.5 * sum(f ** 2 for f in FAKE.tolist()) / 4
    expected_g = 0.5 * sum((f - 1) ** 2 for f in FAKE.tolist()) / 4
    assert d_loss("lsgan", REAL, FAKE).item() == pytest.approx(expected_d, rel=1e-12)
    assert g_loss("lsgan", FAKE).item() == pytest.approx(expected_g, rel=1e-12)


def test_hinge_by_hand():
    # relu(1 - real) = [0, 1.5, 0.7, 0]; relu(1 + fake) = [0, 1.7, 0, 1.2]
    assert d_loss("hinge", REAL, FAKE).item() == pytest.approx((1.5 + 0.7) / 4 + (1.7 + 1.2) / 4, rel=1e-12)
    assert g_loss("hinge", FAKE).item() == pytest.approx(-(-1.0 + 0.7 - 3.0 + 0.2) / 4, rel=1e-12)


def test_wgan_by_hand():
    assert d_loss("wgan", REAL, FAKE).item() == pytest.approx((-3.1 / 4) - (3.3 / 4), rel=1e-12)
    assert g_loss("wgan", FAKE).item() == pytest.approx(3.1 / 4, rel=1e-12)


@pytest.mark.parametrize("name", list(LOSSES))
def test_losses_are_scalars_with_gradients(name):
    real, fake = REAL.clone().requires_grad_(), FAKE.clone().requires_grad_()
    loss = d_loss(name, real, fake) + g_loss(name, fake)
    assert loss.shape == ()
    loss.backward()
    assert torch.isfinite(real.grad).all() and torch.isfinite(fake.grad).all()


# -- gradient penalty -------------------------------------------------------------------------------------------
def test_gradient_penalty_of_a_linear_critic():
    """D(x) = w·x has gradient w everywhere, so the penalty is weight·(‖w‖ - 1)² whatever the interpolation."""
    torch.manual_seed(0)
    w = torch.randn(1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.randn(6, 3, 4, 5, dtype=torch.float64), torch.randn(6, 3, 4, 5, dtype=torch.float64)
    gp = gradient_penalty(critic, real, fake, weight=7.0)
    expected = 7.0 * (w.detach().norm() - 1) ** 2
    torch.testing.assert_close(gp, expected, rtol=1e-12, atol=0)
    # create_graph: the penalty back-propagates to the critic's parameters: d/dw = 2·weight·(‖w‖-1)·w/‖w‖
    gp.backward()
    n = w.detach().norm()
    torch.testing.assert_close(w.grad, 2 * 7.0 * (n - 1) * w.detach() / n)


def test_gradient_penalty_of_a_quadratic_critic_against_a_slow_reference():
    """D(x) = Σ x² has gradient 2·x̂ at the interpolate; compare with explicit per-sample interpolates."""
    torch.manual_seed(0)
    real, fake = torch.randn(5, 1, 6, 4, dtype=torch.float64), torch.randn(5, 1, 6, 4, dtype=torch.float64)
    critic = lambda x: x.square().flatten(1).sum(1)  # noqa: E731
    gp = gradient_penalty(critic, real, fake, weight=10.0, generator=torch.Generator().manual_seed(123))

    eps = torch.rand(5, 1, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(123))
    terms = []
    for i in range(5):
        mixed = eps[i, 0, 0, 0].item() * real[i] + (1 - eps[i, 0, 0, 0].item()) * fake[i]
        norm = math.sqrt(sum((2 * v) ** 2 for v in mixed.flatten().tolist()))
        terms.append((norm - 1) ** 2)
    assert gp.item() == pytest.approx(10.0 * sum(terms) / 5, rel=1e-10)
    # the same generator state gives the same interpolation
    again = gradient_penalty(critic, real, fake, weight=10.0, generator=torch.Generator().manual_seed(123))
    assert again.item() == gp.item()


def test_gradient_penalty_with_a_conditional_discriminator():
    torch.manual_seed(0)
    D = Discriminator(image_shape=(1, 28, 28), channels=4, n_classes=3, batch_norm=False)
    real, fake, labels = torch.randn(4, 1, 28, 28), torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 0])
    gp = gradient_penalty(D, real, fake, labels, weight=10.0)
    assert gp.shape == () and gp.item() > 0
    gp.backward()
    # every parameter but the head's bias (which does not change ∇ₓD) receives a finite gradient
    missing = [name for name, p in D.named_parameters() if p.grad is None]
    assert missing == ["head.bias"]
    assert all(torch.isfinite(p.grad).all() for p in D.parameters() if p.grad is not None)


# -- accuracy ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bce", "hinge"])
def test_d_accuracy_of_losses_with_targets_either_side_of_0(name):
    # real > 0: 2.0, 0.3, 1.5 (3 of 4); fake < 0: -1.0, -3.0 (2 of 4)
    assert d_accuracy(name, REAL, FAKE).item() == pytest.approx(5 / 8)
    assert d_accuracy(name, torch.tensor([1.0, 2.0]), torch.tensor([-1.0])).item() == 1.0
    assert d_accuracy(name, torch.tensor([0.0]), torch.tensor([0.0])).item() == 0.0  # 0 counts as wrong both ways


def test_d_accuracy_of_lsgan_splits_its_targets_1_and_0_at_one_half():
    # a D that has learnt its targets exactly is right about every image (at 0 it was wrong about every fake)
    assert d_accuracy("lsgan", torch.tensor([1.0, 0.9]), torch.tensor([0.0, 0.1])).item() == 1.0
    # real > 0.5: 2.0, 1.5 (2 of 4); fake < 0.5: -1.0, -3.0, 0.2 (3 of 4)
    assert d_accuracy("lsgan", REAL, FAKE).item() == pytest.approx(5 / 8)


def test_d_accuracy_of_a_wgan_critic_does_not_depend_on_where_its_scores_sit():
    """A critic's scores mean something only relative to each other: shifting them all changes nothing."""
    real, fake = torch.tensor([5.0, 7.0, 4.0]), torch.tensor([1.0, 4.5, 2.0])  # boundary (16/3 + 7.5/3) / 2 = 3.92
    assert d_accuracy("wgan", real, fake).item() == pytest.approx(5 / 6)  # 4.5 is above it
    for shift in (-100.0, 1e3):
        assert d_accuracy("wgan", real + shift, fake + shift).item() == pytest.approx(5 / 6)

"""DCGAN shapes and behaviour at every supported size, the model registry, and the weight moving average."""

import pytest
import torch
from torch import nn

from specgan.errors import ConfigError
from specgan.models import MODELS, build_model
from specgan.models.dcgan import Discriminator, Generator, layout
from specgan.models.ema import EMA

SHAPES = [(1, 28, 28), (1, 32, 32), (3, 32, 32), (1, 64, 64), (1, 80, 128)]


@pytest.mark.parametrize("shape,expected", [
    ((1, 28, 28), (2, 7, 7)), ((1, 32, 32), (3, 4, 4)), ((1, 64, 64), (4, 4, 4)), ((1, 80, 128), (4, 5, 8)),
    ((1, 256, 256), (5, 8, 8)), ((1, 6, 6), (1, 3, 3)), ((2, 12, 40), (2, 3, 10))])
def test_layout(shape, expected):
    assert layout(shape) == expected


@pytest.mark.parametrize("shape", [(1, 4, 4), (1, 2, 64), (1, 27, 28), (1, 7, 7), (1, 64, 5), (28, 28), (0, 28, 28)])
def test_impossible_shape_raises(shape):
    with pytest.raises(ValueError, match="image_shape"):
        Generator(image_shape=shape, channels=4)
    with pytest.raises(ValueError, match="image_shape"):
        Discriminator(image_shape=shape, channels=4)


@pytest.mark.parametrize("spectral_norm,batch_norm", [(False, True), (True, False), (True, True)])
@pytest.mark.parametrize("shape,n_classes", [(s, 0) for s in SHAPES] + [((1, 64, 64), 10)])
def test_shapes_and_range(shape, n_classes, spectral_norm, batch_norm):
    torch.manual_seed(0)
    G = Generator(image_shape=shape, z_dim=16, channels=8, n_classes=n_classes)
    D = Discriminator(image_shape=shape, channels=8, n_classes=n_classes, spectral_norm=spectral_norm,
                      batch_norm=batch_norm)
    labels = torch.tensor([0, 3, 9]) if n_classes else None
    images = G(torch.randn(3, 16), labels)
    assert images.shape == (3, *shape)
    assert images.min() >= -1 and images.max() <= 1
    logits = D(images, labels)
    assert logits.shape == (3,) and logits.dtype == torch.float32
    logits.sum().backward()  # D is differentiable end to end, G included
    assert all(p.grad is not None for p in G.parameters())


def test_discriminator_layers():
    D = Discriminator(image_shape=(1, 64, 64), channels=8, n_classes=10, spectral_norm=True, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    weighted = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert len(weighted) == 4 + 2  # four stages, the head and the projection embedding
    assert all(hasattr(m, "parametrizations") and "weight" in m.parametrizations for m in weighted)
    D = Discriminator(image_shape=(1, 64, 64), channels=8)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 3  # none on the first stage
    assert [m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)] == [0.2] * 4


def test_generator_stages_start_from_rectified_features():
    """The projected z goes through BN and then ReLU before the first transposed convolution."""
    torch.manual_seed(0)
    G = Generator(image_shape=(1, 28, 28), z_dim=8, channels=4)
    seen = []
    G.stages[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    G(torch.randn(4, 8))
    want = torch.relu(G.project_norm(G.project(torch.randn(0, 8)).view(0, *G.start)))  # shape only
    assert seen[0].shape == (4, *want.shape[1:]) and seen[0].min() >= 0 and (seen[0] == 0).any()


def test_widest_layer_is_capped():
    G = Generator(image_shape=(1, 256, 256), z_dim=4, channels=2)  # five stages: 2·16 would exceed 2·8
    assert G.start == (16, 8, 8)
    D = Discriminator(image_shape=(1, 256, 256), channels=2)
    assert D.head.in_features == 16 * 8 * 8


def test_dcgan_initialisation():
    torch.manual_seed(0)
    G = Generator(image_shape=(1, 64, 64), z_dim=64, channels=32)
    weights = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, (nn.ConvTranspose2d, nn.Linear))])
    bn = torch.cat([m.weight for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(weights.std().item() - 0.02) < 0.002 and abs(weights.mean().item()) < 0.002
    assert abs(bn.mean().item() - 1) < 0.01 and bn.std().item() < 0.05
    # the projection discriminator's embedding is N(0, 0.02) too, not nn.Embedding's N(0, 1)
    D = Discriminator(image_shape=(1, 64, 64), channels=32, n_classes=10)
    assert abs(D.embed.weight.std().item() - 0.02) < 0.002


def test_conditional_generator_depends_on_label():
    torch.manual_seed(0)
    G = Generator(image_shape=(1, 28, 28), z_dim=8, channels=8, n_classes=10).eval()
    z = torch.randn(1, 8).expand(10, 8)
    images = G(z, torch.arange(10))
    distinct = torch.cdist(images.flatten(1), images.flatten(1))
    assert (distinct + torch.eye(10)).min() > 1e-3


@pytest.mark.parametrize("embed_dim, width", [(0, 10), (3, 3), (100, 100)])
def test_the_label_embedding_has_one_dimension_per_class_unless_told(embed_dim, width):
    G = Generator(image_shape=(1, 28, 28), z_dim=100, channels=8, n_classes=10, embed_dim=embed_dim)
    assert G.embed.weight.shape == (10, width) and G.project.in_features == 100 + width


@pytest.mark.parametrize("n_classes", [0, 10])
def test_generator_batch_consistency_in_eval(n_classes):
    torch.manual_seed(0)
    G = Generator(image_shape=(1, 80, 128), z_dim=8, channels=8, n_classes=n_classes)
    G(torch.randn(4, 8), torch.arange(4) if n_classes else None)  # one training step's worth of BN statistics
    G.eval()
    z, labels = torch.randn(5, 8), (torch.arange(5) if n_classes else None)
    batch = G(z, labels)
    for i in range(5):
        one = G(z[i:i + 1], labels[i:i + 1] if n_classes else None)
        torch.testing.assert_close(one[0], batch[i], rtol=0, atol=1e-5)


def test_labels_are_checked():
    G = Generator(image_shape=(1, 28, 28), z_dim=8, channels=4, n_classes=3)
    with pytest.raises(ValueError, match="labels are required"):
        G(torch.randn(2, 8))
    D = Discriminator(image_shape=(1, 28, 28), channels=4)
    with pytest.raises(ValueError, match="unconditional"):
        D(torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected \(N, 1, 28, 28\)"):
        D(torch.zeros(2, 1, 32, 32))
    # a column of labels, (N, 1), is not a batch of labels: the embedding would broadcast it silently
    with pytest.raises(ValueError, match=r"labels of shape \(2, 1\) for a batch of 2; expected \(2,\)"):
        G(torch.randn(2, 8), torch.zeros(2, 1, dtype=torch.long))
    D3 = Discriminator(image_shape=(1, 28, 28), channels=4, n_classes=3)
    with pytest.raises(ValueError, match=r"expected \(2,\)"):
        D3(torch.zeros(2, 1, 28, 28), torch.zeros(3, dtype=torch.long))


def test_projection_term():
    """The conditional logit is the unconditional head plus <embed(y), φ(x)>."""
    torch.manual_seed(0)
    D = Discriminator(image_shape=(1, 28, 28), channels=4, n_classes=3).eval()
    x, y = torch.randn(2, 1, 28, 28), torch.tensor([0, 2])
    features = D.stages(x).flatten(1)
    expected = D.head(features)[:, 0] + (D.embed.weight[y] * features).sum(1)
    torch.testing.assert_close(D(x, y), expected)


@pytest.mark.parametrize("shape", [(1, 32, 32), (1, 24, 40)], ids=["square", "3x5-grid"])
@pytest.mark.parametrize("n_classes,spectral_norm", [(0, False), (3, False), (3, True)])
def test_discriminator_is_the_same_function_channels_last(n_classes, spectral_norm, shape):
    """Channels-last, the discriminator reads its last features in memory order (H, W, C) with its head and
    projection weights permuted to match: the same logits and gradients as the contiguous layout's flattening."""
    torch.manual_seed(0)
    D = Discriminator(image_shape=shape, channels=4, n_classes=n_classes, spectral_norm=spectral_norm)
    D_cl = Discriminator(image_shape=shape, channels=4, n_classes=n_classes, spectral_norm=spectral_norm)
    D_cl.load_state_dict(D.state_dict())
    D_cl.to(memory_format=torch.channels_last)
    x = torch.randn(6, *shape)
    y = torch.tensor([0, 1, 2, 0, 1, 2]) if n_classes else None
    results = []
    for model, layout in ((D, torch.contiguous_format), (D_cl, torch.channels_last)):
        model.zero_grad()
        x_in = x.contiguous(memory_format=layout).requires_grad_()
        logits = model(x_in, y)
        logits.square().sum().backward()
        grads = {name: p.grad.contiguous() for name, p in model.named_parameters() if p.grad is not None}
        results.append((logits.detach(), x_in.grad.contiguous(), grads))
    (logits, grad_x, grads), (logits_cl, grad_x_cl, grads_cl) = results
    # checked after the passes: a training-mode forward advances D_cl's spectral-norm power iteration (not D's)
    assert not D_cl.stages(x.contiguous(memory_format=torch.channels_last)).is_contiguous()  # the permuted route
    assert grads_cl.keys() == grads.keys() and any(name.startswith("head.") and "weight" in name for name in grads)

    def assert_equal_but_rounding(got, want, name):  # sums in another order: float32 rounding of the largest terms
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(want.abs().max()), msg=name)

    assert_equal_but_rounding(logits_cl, logits, "logits")
    assert_equal_but_rounding(grad_x_cl, grad_x, "grad of x")
    for name in grads:
        assert_equal_but_rounding(grads_cl[name], grads[name], name)


def test_registry():
    assert "dcgan" in MODELS
    G, D = build_model("dcgan", image_shape=(1, 28, 28), n_classes=0, z_dim=8, channels=4, spectral_norm=False,
                       batch_norm_d=False)
    assert isinstance(G, Generator) and isinstance(D, Discriminator)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    with pytest.raises(ConfigError, match=r"model.name = 'stylegan': must be one of dcgan"):
        build_model("stylegan", image_shape=(1, 28, 28))


# -- EMA ---------------------------------------------------------------------------------------------------------
class _Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0]))
        self.register_buffer("count", torch.tensor(0))
        self.register_buffer("stat", torch.tensor([0.0]))


def test_ema_matches_hand_computed_average():
    live = _Scale()
    ema = EMA(live, decay=0.9)
    expected = 1.0
    for step, value in enumerate([2.0, -1.0, 5.0], start=1):
        with torch.no_grad():
            live.w.fill_(value)
            live.count.fill_(step)
            live.stat.fill_(10.0 * value)
        ema.update(live)
        expected = 0.9 * expected + 0.1 * value
        assert ema.module.w.item() == pytest.approx(expected, rel=1e-6)
        assert ema.module.count.item() == step and ema.module.stat.item() == 10.0 * value  # copied, not averaged
    assert live.w.item() == 5.0  # the live module is untouched
    assert not ema.module.training and not ema.module.w.requires_grad


def test_ema_state_dict_round_trip_and_loads_into_plain_module():
    torch.manual_seed(0)
    G = Generator(image_shape=(1, 28, 28), z_dim=8, channels=4)
    ema = EMA(G, decay=0.5)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
    G(torch.randn(4, 8))  # BN running statistics move
    ema.update(G)
    state = ema.state_dict()
    plain = Generator(image_shape=(1, 28, 28), z_dim=8, channels=4)
    plain.load_state_dict(state)  # what sampling from a checkpoint does
    other = EMA(Generator(image_shape=(1, 28, 28), z_dim=8, channels=4), decay=0.5)
    other.load_state_dict(state)
    for a, b in zip(other.module.state_dict().values(), ema.module.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(ema.module.stages[1].running_mean, G.stages[1].running_mean, rtol=0, atol=0)


def test_standing_statistics_are_the_statistics_of_all_batches():
    from specgan.models.ema import standing_statistics

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).eval()
    net[1].running_mean.fill_(5.0)  # stale statistics, as an averaged generator inherits them
    batches = [(torch.randn(32, 3) * (i + 1),) for i in range(3)]
    standing_statistics(net, batches)
    with torch.no_grad():
        features = [net[0](x) for (x,) in batches]
    # momentum=None averages the per-batch statistics (batch means; unbiased batch variances).
    mean = torch.stack([f.mean(0) for f in features]).mean(0)
    var = torch.stack([f.var(0, unbiased=True) for f in features]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mean)
    torch.testing.assert_close(net[1].running_var, var)
    assert not net.training and net[1].momentum == 0.1


def test_ema_warmup_follows_the_live_weights_early():
    from specgan.models.ema import EMA

    live = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(live.weight)
    ema = EMA(live, decay=0.999, warmup=True)
    expected = 0.0
    for k in range(5):
        live.weight.data.fill_(float(k + 1))
        decay = min(0.999, (1 + k) / (10 + k))
        expected = decay * expected + (1 - decay) * (k + 1)
        ema.update(live)
        assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)
    assert ema.updates == 5


@pytest.mark.parametrize("name,kwargs", [("dcgan", {"image_shape": (1, 27, 27)}),
                                         ("cyclegan", {"image_shape": (1, 64, 7), "channels": 4})])
def test_a_size_the_family_cannot_take_is_a_config_error_naming_family_and_shape(name, kwargs):
    with pytest.raises(ConfigError, match=rf"model.name = '{name}': .*image_shape = \(1, "):
        build_model(name, **kwargs)

"""The measurements behind ``specgan eval``: the Fréchet distance against closed forms and an eigen-decomposition
oracle, the MNIST classifier (accuracy bar, cache), and generator scores for a perfect, a collapsed and a noise
generator."""

from __future__ import annotations

import math
import stat

import numpy as np
import pytest
import torch

from specgan.data.image_data import ImageData
from specgan.errors import SpecganError
from specgan.metrics import classifier as clf
from specgan.metrics.classifier import (
    DigitClassifier,
    accuracy,
    cache_path,
    data_fingerprint,
    load_or_train_classifier,
    random_shift,
)
from specgan.metrics.frechet import feature_statistics, frechet_distance
from specgan.metrics.generative import entropy_bits, evaluate_generator

# -- Fréchet distance ----------------------------------------------------------------------------------------------


def _rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _random_cov(d: int, n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    return np.cov(x, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _reference_fd(mu1, s1, mu2, s2) -> float:
    """Tr (S1 S2)^{1/2} = Tr (S1^{1/2} S2 S1^{1/2})^{1/2}: a symmetric form computed with eigh only."""
    r1 = _psd_sqrt(s1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(_psd_sqrt(r1 @ s2 @ r1)))


def test_frechet_matches_the_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # The same Gaussians in a rotated basis (commuting, non-diagonal covariances): same distance.
    q = _rotation(d, rng)
    got = frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)


def test_frechet_of_equal_covariances_is_the_squared_mean_distance():
    rng = np.random.default_rng(1)
    s = _random_cov(8, 100, rng)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    assert frechet_distance(mu1, s, mu2, s) == pytest.approx(((mu1 - mu2) ** 2).sum(), rel=1e-6, abs=1e-8)


def test_frechet_is_zero_for_identical_statistics_and_symmetric():
    rng = np.random.default_rng(2)
    d = 32
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(d, 200, rng), _random_cov(d, 200, rng)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-8 * np.trace(s1)
    d12, d21 = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    assert d12 > 0 and d12 == pytest.approx(d21, rel=1e-8)
    assert d12 == pytest.approx(_reference_fd(mu1, s1, mu2, s2), rel=1e-8)


def test_frechet_with_singular_covariances_stays_finite():
    rng = np.random.default_rng(3)
    d = 64
    # Fewer samples than dimensions: rank-deficient covariances, as with a few generated images.
    x1, x2 = rng.normal(size=(20, d)), rng.normal(size=(20, d)) + 0.5
    (mu1, s1), (mu2, s2) = feature_statistics(x1), feature_statistics(x2)
    got = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(got) and got == pytest.approx(_reference_fd(mu1, s1, mu2, s2), rel=1e-4)
    # A collapsed set: all-zero covariance.
    zero = np.zeros((d, d))
    assert frechet_distance(mu1, zero, mu2, s2) == pytest.approx(((mu1 - mu2) ** 2).sum() + np.trace(s2), rel=1e-8)


@pytest.mark.parametrize("first_root", ["nan", "10% off"])
def test_frechet_falls_back_to_a_diagonal_offset_when_the_square_root_fails(monkeypatch, first_root):
    """A square root that fails as a singular product's can (non-finite, or finite and wrong: scipy gives it with
    only a warning) is not used: the distance is computed again with eps added to both diagonals."""
    import scipy.linalg

    rng = np.random.default_rng(4)
    d = 8
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(d, 50, rng), _random_cov(d, 50, rng)
    exact = _reference_fd(mu1, s1, mu2, s2)
    real_sqrtm, args = scipy.linalg.sqrtm, []

    def failing_sqrtm(a):  # the first call fails
        args.append(a)
        if len(args) > 1:
            return real_sqrtm(a)
        return np.full_like(a, np.nan) if first_root == "nan" else real_sqrtm(a) * 1.1

    monkeypatch.setattr(scipy.linalg, "sqrtm", failing_sqrtm)
    got = frechet_distance(mu1, s1, mu2, s2, eps=1e-6)
    assert len(args) == 2 and np.allclose(args[1], (s1 + 1e-6 * np.eye(d)) @ (s2 + 1e-6 * np.eye(d)))
    assert got == pytest.approx(exact, abs=1e-2)


def test_frechet_rejects_a_matrix_that_is_no_covariance():
    """A negative variance gives the square root a large imaginary part: an error, not its real part taken."""
    with pytest.raises(ValueError, match="matrix square root has an imaginary part of 1"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="mismatched shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_statistics_are_float64_mean_and_unbiased_covariance():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    mu, sigma = feature_statistics(x)
    assert mu.dtype == sigma.dtype == np.float64 and mu.shape == (6,) and sigma.shape == (6, 6)
    ref = x.double().numpy()
    np.testing.assert_allclose(mu, ref.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(ref, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(sigma, (ref - ref.mean(0)).T @ (ref - ref.mean(0)) / 49, rtol=1e-10)


def test_entropy_in_bits():
    assert entropy_bits(np.full(10, 0.1)) == pytest.approx(math.log2(10))
    assert entropy_bits(np.eye(10)[3]) == 0.0
    assert entropy_bits(np.array([0.5, 0.5, 0, 0])) == pytest.approx(1.0)


# -- classifier (no data needed) -----------------------------------------------------------------------------------


def test_classifier_shapes():
    model = DigitClassifier().eval()
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    assert model.features(x).shape == (5, 128) and model(x).shape == (5, 10)


def test_random_shift_moves_each_image_within_bounds():
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    y = random_shift(x, shift=2, generator=torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    windows = {(a, b) for a in range(5) for b in range(5)}
    seen = set()
    for i in range(len(x)):
        match = [(a, b) for a, b in windows if torch.equal(y[i], padded[i, :, a:a + 28, b:b + 28])]
        assert match
        seen.update(match)
    assert len(seen) > 10  # the shifts differ between images


def test_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = tmp_path / "data"
    data.mkdir()
    assert cache_path(data, kind="mnist") == data / "specgan-classifier-mnist.pt"
    assert cache_path(data, kind="mnist", cache_dir=tmp_path / "c") == tmp_path / "c" / "specgan-classifier-mnist.pt"
    data.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)  # read-only (counts even for root)
    try:
        assert cache_path(data, kind="fashion-mnist") == tmp_path / "xdg" / "specgan" / (
            "specgan-classifier-fashion-mnist.pt")
    finally:
        data.chmod(0o755)
    with pytest.raises(SpecganError, match="kind '../x'"):
        cache_path(data, kind="../x")


def _tiny_set(seed: int, n: int = 64) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    return ImageData(images=torch.rand(n, 1, 28, 28, generator=g) * 2 - 1,
                     labels=torch.randint(0, 10, (n,), generator=g), class_names=tuple("0123456789"))


def test_cache_is_retrained_when_the_data_changes_or_the_file_is_damaged(tmp_path, monkeypatch):
    calls = []

    def fake_train(train, test, **kwargs):
        calls.append(len(train))
        torch.manual_seed(len(calls))
        return DigitClassifier().eval(), 0.5

    monkeypatch.setattr(clf, "train_classifier", fake_train)
    a, b = _tiny_set(0), _tiny_set(1)
    assert data_fingerprint(a) != data_fingerprint(b) and data_fingerprint(a) == data_fingerprint(_tiny_set(0))
    _, info = load_or_train_classifier(tmp_path, kind="toy", train=a, test=a)
    assert info["trained_now"] and info["reason"] == "missing" and len(calls) == 1
    assert info["path"] == str(tmp_path / "specgan-classifier-toy.pt")
    _, info = load_or_train_classifier(tmp_path, kind="toy", train=a, test=a)
    assert not info["trained_now"] and info["accuracy"] == 0.5 and len(calls) == 1
    _, info = load_or_train_classifier(tmp_path, kind="toy", train=b, test=b)
    assert info["trained_now"] and info["reason"] == "stale" and len(calls) == 2
    (tmp_path / "specgan-classifier-toy.pt").write_bytes(b"not a checkpoint")
    _, info = load_or_train_classifier(tmp_path, kind="toy", train=b, test=b)
    assert info["trained_now"] and info["reason"] == "unreadable" and len(calls) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["specgan-classifier-toy.pt"]  # no temporary files left


def test_classifier_rejects_other_image_sizes():
    data = ImageData(images=torch.zeros(4, 1, 32, 32), labels=torch.zeros(4, dtype=torch.int64),
                     class_names=tuple("0123456789"), source="/data/cifar")
    with pytest.raises(SpecganError, match="/data/cifar: the digit classifier needs 1x28x28 images, got 1x32x32"):
        clf.train_classifier(data, data)


# -- real MNIST ----------------------------------------------------------------------------------------------------


# mnist_sets and mnist_classifier are session fixtures in conftest.py (the CLI tests reuse the classifier).


def test_classifier_reaches_the_accuracy_bar_on_mnist(mnist_classifier, mnist_sets):
    model, info, cache = mnist_classifier
    assert info["trained_now"] and info["path"] == str(cache / "specgan-classifier-mnist.pt")
    print(f"MNIST classifier: {clf.DEFAULT_EPOCHS} epoch(s), {info['seconds']:.1f} s, "
          f"test accuracy {info['accuracy']:.4f}")
    assert info["accuracy"] >= 0.985
    assert not model.training
    assert accuracy(model, mnist_sets[1]) == pytest.approx(info["accuracy"])


def test_classifier_loads_from_the_cache(mnist_classifier, mnist, mnist_sets):
    model, info, cache = mnist_classifier
    train, test = mnist_sets
    again, info2 = load_or_train_classifier(mnist, kind="mnist", train=train, test=test, cache_dir=cache)
    assert not info2["trained_now"] and info2["path"] == info["path"] and info2["accuracy"] == info["accuracy"]
    assert not again.training
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    state = torch.load(info["path"], weights_only=True)
    assert state["kind"] == "mnist" and state["fingerprint"] == data_fingerprint(train)
    assert state["n_train"] == 60000


class _Perfect:
    """Returns real test images: of the requested labels, or random ones when unconditional."""

    def __init__(self, data: ImageData):
        self.data = data
        self.by_class = [torch.nonzero(data.labels == c).flatten() for c in range(10)]

    def __call__(self, k: int, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            return self.data.images[torch.randint(0, len(self.data), (k,))]
        picks = [self.by_class[int(c)][torch.randint(0, len(self.by_class[int(c)]), ())] for c in labels]
        return self.data.images[torch.stack(picks)]


def _noise(k: int, labels: torch.Tensor | None) -> torch.Tensor:
    return torch.rand(k, 1, 28, 28) * 2 - 1


N = 2000


@pytest.fixture(scope="session")
def noise_scores(mnist_classifier, mnist_sets):
    return evaluate_generator(_noise, classifier=mnist_classifier[0], real_test=mnist_sets[1], n=N,
                              conditional=False)


@pytest.fixture(scope="session")
def perfect_scores(mnist_classifier, mnist_sets):
    """An unconditional "perfect" generator: random real test images."""
    test = mnist_sets[1]
    return evaluate_generator(_Perfect(test), classifier=mnist_classifier[0], real_test=test, n=N,
                              conditional=False)


def test_perfect_generator_scores_well(mnist_classifier, mnist_sets, noise_scores):
    model, test = mnist_classifier[0], mnist_sets[1]
    progress = []
    scores = evaluate_generator(_Perfect(test), classifier=model, real_test=test, n=N, conditional=True,
                                on_progress=lambda done, total: progress.append((done, total)))
    assert scores["n"] == N and scores["n_real"] == len(test)
    assert scores["label_accuracy"] >= 0.98
    assert scores["class_entropy"] > 3.2
    assert sum(scores["class_histogram"]) == pytest.approx(1.0) and len(scores["class_histogram"]) == 10
    assert scores["fd"] < noise_scores["fd"] / 10
    assert progress[-1] == (len(test) + N, len(test) + N)
    assert all(a[0] < b[0] for a, b in zip(progress, progress[1:]))


def test_perfect_unconditional_generator_scores_well(perfect_scores, noise_scores):
    unconditional = perfect_scores
    assert "label_accuracy" not in unconditional
    assert unconditional["class_entropy"] > 3.2 and unconditional["fd"] < noise_scores["fd"] / 10


def test_within_class_diversity_tells_one_image_per_class_from_real_variety(mnist_classifier, mnist_sets,
                                                                            perfect_scores):
    """A generator that draws one fixed real image per requested class has perfect label accuracy and class entropy;
    only the within-class diversity (0) shows that it ignores its noise. Real images score about 1."""
    model, test = mnist_classifier[0], mnist_sets[1]
    prototypes = torch.stack([test.images[test.labels == c][0] for c in range(10)])
    scores = evaluate_generator(lambda k, labels: prototypes[labels], classifier=model, real_test=test, n=N,
                                conditional=True)
    assert scores["label_accuracy"] > 0.95 and scores["class_entropy"] > 3.2
    assert scores["within_class_diversity"] == pytest.approx(0.0, abs=1e-12)
    assert 0.8 < perfect_scores["within_class_diversity"] < 1.2


def test_class_spread_is_the_trace_of_each_class_covariance():
    from specgan.metrics.generative import class_spread

    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.normal(size=(50, 4)))
    classes = torch.from_numpy(rng.integers(0, 3, 50))
    classes[classes == 2] = 1  # class 2 empty: NaN
    classes[0] = 2             # then one row: still NaN
    spread = class_spread(features, classes, 4)
    for c in (0, 1):
        assert spread[c].item() == pytest.approx(np.trace(np.cov(features[classes == c].numpy(), rowvar=False)))
    assert torch.isnan(spread[2]) and torch.isnan(spread[3])


def test_collapsed_generator_shows_low_entropy_and_large_distance(mnist_classifier, mnist_sets, perfect_scores):
    model, test = mnist_classifier[0], mnist_sets[1]
    seven = test.images[test.labels == 7][:1]
    scores = evaluate_generator(lambda k, labels: seven.expand(k, -1, -1, -1), classifier=model, real_test=test,
                                n=N, conditional=True)
    assert scores["class_entropy"] < 0.5
    assert scores["class_histogram"][7] == 1.0
    assert scores["label_accuracy"] == pytest.approx(0.1)
    assert scores["fd"] > 10 * perfect_scores["fd"]


def test_noise_generator_has_a_large_distance_and_is_seeded(mnist_classifier, mnist_sets, noise_scores,
                                                           perfect_scores):
    model, test = mnist_classifier[0], mnist_sets[1]
    assert noise_scores["fd"] > 10 * perfect_scores["fd"]
    small = _subset(test, 1000)  # a smaller reference keeps this quick
    again = evaluate_generator(_noise, classifier=model, real_test=small, n=500, conditional=False)
    assert again == evaluate_generator(_noise, classifier=model, real_test=small, n=500, conditional=False)
    assert evaluate_generator(_noise, classifier=model, real_test=small, n=500, conditional=False, seed=1) != again


def test_non_finite_samples_are_reported(mnist_classifier, mnist_sets):
    with pytest.raises(SpecganError, match="NaN or infinite"):
        evaluate_generator(lambda k, labels: torch.full((k, 1, 28, 28), float("nan")),
                           classifier=mnist_classifier[0], real_test=_subset(mnist_sets[1], 100), n=20,
                           conditional=False)


def _subset(data: ImageData, n: int) -> ImageData:
    return ImageData(images=data.images[:n], labels=data.labels[:n], class_names=data.class_names)


# -- scores against a reference computation (an untrained judge: no data needed) ------------------------------------


def test_generator_scores_match_a_reference_computation():
    """Every number of evaluate_generator recomputed with numpy from the judge's own features and predictions: the
    histogram is over the n samples (not the real count), the Frechet distance pairs each set's own covariance,
    the samples' spread is by requested class (conditional) or predicted class, the real spread by the true labels;
    and the global RNG is left as it was found."""
    torch.manual_seed(0)
    judge = DigitClassifier().eval()
    real = _tiny_set(5, n=40)  # 40 real images, 30 samples: a histogram over the wrong count does not sum to 1
    n = 30

    def reference(conditional: bool) -> dict:
        drawn = []

        def sample(k, labels):
            x = torch.rand(k, 1, 28, 28) * 2 - 1  # the global RNG, seeded by evaluate_generator
            drawn.append(x)
            return x

        before = torch.get_rng_state()
        scores = evaluate_generator(sample, classifier=judge, real_test=real, n=n, conditional=conditional,
                                    batch_size=7, seed=3)
        assert torch.equal(torch.get_rng_state(), before)  # seeded for the call, restored afterwards
        with torch.no_grad():
            fake = judge.features(torch.cat(drawn)).double()
            predicted = judge.head(fake.float()).argmax(dim=1).numpy()
            real_f = judge.features(real.images).double().numpy()
        fake = fake.numpy()
        requested = np.arange(n) % 10
        mu_f, s_f, mu_r, s_r = fake.mean(0), np.cov(fake, rowvar=False), real_f.mean(0), np.cov(real_f, rowvar=False)
        assert scores["fd"] == pytest.approx(_reference_fd(mu_f, s_f, mu_r, s_r), rel=1e-4)
        histogram = np.bincount(predicted, minlength=10) / n
        np.testing.assert_allclose(scores["class_histogram"], histogram, rtol=1e-12)
        assert scores["class_entropy"] == pytest.approx(-sum(p * math.log2(p) for p in histogram if p > 0))
        by = requested if conditional else predicted
        labels = real.labels.numpy()
        ratios = [np.trace(np.cov(fake[by == c], rowvar=False)) / np.trace(np.cov(real_f[labels == c], rowvar=False))
                  for c in range(10) if (by == c).sum() >= 2 and (labels == c).sum() >= 2]
        assert ratios and scores["within_class_diversity"] == pytest.approx(np.mean(ratios), rel=1e-5)
        if conditional:
            assert scores["label_accuracy"] == pytest.approx((predicted == requested).mean())
        return scores

    assert "label_accuracy" not in reference(conditional=False)
    reference(conditional=True)


def test_accuracy_is_measured_in_eval_mode_and_leaves_the_mode_as_it_was():
    torch.manual_seed(0)
    model, data = DigitClassifier(), _tiny_set(2, n=50)
    with torch.no_grad():
        expected = (model.eval()(data.images).argmax(dim=1) == data.labels).double().mean().item()
    model.train()
    assert accuracy(model, data, batch_size=16) == pytest.approx(expected) and model.training
    model.eval()
    assert accuracy(model, data) == pytest.approx(expected) and not model.training


def test_a_cache_whose_weights_do_not_fit_is_stale_not_unreadable(tmp_path, monkeypatch):
    """A cache that loads and names this kind and data, but whose weights do not fit the network (another
    architecture under the same version), is "stale": it was read, and it was made for other code."""
    monkeypatch.setattr(clf, "train_classifier", lambda train, test, **kwargs: (DigitClassifier().eval(), 0.5))
    data = _tiny_set(0)
    _, info = load_or_train_classifier(tmp_path, kind="toy", train=data, test=data)
    state = torch.load(info["path"], weights_only=True)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("head.")}  # a missing layer
    torch.save(state, info["path"])
    _, info = load_or_train_classifier(tmp_path, kind="toy", train=data, test=data)
    assert info["trained_now"] and info["reason"] == "stale"

"""How ``specgan eval`` scores an image generator on MNIST-like data (MNIST, Fashion-MNIST: 1×28×28, 10 classes).

All numbers come from one judge: the :class:`~specgan.metrics.classifier.DigitClassifier` trained on the real
*training* split of the same dataset (cached per dataset kind, see
:func:`~specgan.metrics.classifier.load_or_train_classifier`), used in eval mode (no dropout, batch-norm running
statistics) under ``torch.no_grad``. :func:`evaluate_generator` draws ``n`` samples (default 10 000) in batches
of ``batch_size`` and returns:

``fd``
    Fréchet distance ("classifier FID") between two Gaussians fitted to the classifier's 128-d penultimate
    features (:meth:`DigitClassifier.features`: the ReLU output of the fully connected layer, before the final
    dropout and linear layer). One Gaussian is fitted to the features of the ``n`` generated samples, the other to
    the features of the *whole real test split* (10 000 images for MNIST), both with the sample mean and the
    unbiased covariance (``N - 1``) in float64; the distance is
    ``||mu_g - mu_r||² + Tr(S_g + S_r - 2 (S_g S_r)^{1/2})`` (:func:`~specgan.metrics.frechet.frechet_distance`).
    0 means the feature statistics match; it is *not* comparable with Inception-based FID numbers, nor between
    datasets or classifier versions. With few samples it is biased upwards, so compare values at the same ``n``.

``label_accuracy`` (conditional generators only; absent otherwise)
    The requested labels cycle over the classes, ``label_i = i mod 10`` for ``i = 0 .. n-1``, so each class is
    requested ``n / 10`` times (exactly, when ``n`` is a multiple of 10). It is the fraction of samples whose
    predicted class (argmax of the logits) equals the requested label.

``class_entropy`` and ``class_histogram``
    ``class_histogram[c]`` is the fraction of the ``n`` samples predicted as class ``c`` (10 numbers summing to
    1). ``class_entropy = -Σ p_c log2 p_c`` in *bits* (0 log 0 = 0): log2(10) ≈ 3.32 when every class is
    predicted equally often, 0 when every sample looks like the same class; mode collapse shows as a lower value.

``within_class_diversity``
    How varied the samples of one class are, against the real images of that class: for each class, the total
    variance (trace of the unbiased covariance) of the penultimate features of the samples in it, divided by the
    same for the real test images of that class (by their true labels); the mean of that ratio over the classes
    with at least two samples. The samples' class is the requested label for conditional generators (the
    variety a condition leaves) and the predicted class otherwise. About 1 means as varied as real data; near 0
    means each class collapsed to (nearly) one image, which neither the label accuracy nor the class entropy
    shows. None when no class has two samples.

``n`` and ``n_real``
    The number of generated samples and of real test images behind the numbers.

Sampling is seeded: the global torch RNG is seeded with ``seed`` for the duration of the call (and restored
afterwards), so a generator that draws its noise from it gives the same samples and numbers every time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from specgan.data.image_data import ImageData
from specgan.errors import SpecganError
from specgan.metrics.classifier import IMAGE_SHAPE, DigitClassifier
from specgan.metrics.frechet import feature_statistics, frechet_distance

#: ``sample(k, labels)`` → ``k`` images ``(k, 1, 28, 28)`` in [-1, 1]; ``labels`` is int64 ``(k,)`` for a
#: conditional generator, ``None`` for an unconditional one.
SampleFn = Callable[[int, Tensor | None], Tensor]


@torch.no_grad()
def evaluate_generator(
    sample: SampleFn,
    *,
    classifier: DigitClassifier,
    real_test: ImageData,
    n: int = 10000,
    conditional: bool,
    batch_size: int = 500,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Score a generator against the real test split with the classifier (see the module docstring).

    Args:
        sample: ``sample(k, labels)`` returns ``k`` images ``(k, 1, 28, 28)`` in [-1, 1], on any device.
        classifier: the trained judge; it is put in eval mode and run on its own device.
        real_test: the real test split (all of it is used for the reference statistics).
        n: generated samples (>= 2).
        conditional: request labels (cycling over the classes) and report ``label_accuracy``.
        batch_size: images per call of ``sample`` and per classifier batch.
        seed: seeds the global torch RNG while sampling (restored afterwards).
        on_progress: ``on_progress(done, total)`` after every batch, counting images: first the real test
            images, then the generated ones (``total = len(real_test) + n``).

    Returns:
        ``{"fd", "class_entropy", "class_histogram", "within_class_diversity", "n", "n_real"}`` plus
        ``"label_accuracy"`` when ``conditional``; floats, a list of ``n_classes`` floats, and ints.

    Raises:
        SpecganError: the generator returned non-finite values.
        ValueError: bad ``n``/``batch_size``, or samples of the wrong shape.
    """
    if n < 2 or batch_size < 1:
        raise ValueError(f"n must be >= 2 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    if len(real_test) < 2:
        raise ValueError(f"the real test set needs at least 2 images, got {len(real_test)}")
    classifier.eval()
    device = next(classifier.parameters()).device
    n_classes = classifier.n_classes
    total = len(real_test) + n
    done = 0

    # Reference: penultimate features of the whole real test split.
    real_features = []
    for start in range(0, len(real_test), batch_size):
        x = real_test.images[start : start + batch_size].to(device, torch.float32)
        real_features.append(classifier.features(x).double().cpu())
        done += x.shape[0]
        if on_progress is not None:
            on_progress(done, total)
    mu_real, sigma_real = feature_statistics(torch.cat(real_features))

    # Generated: n samples in batches; requested labels cycle 0, 1, ..., n_classes - 1, 0, 1, ...
    requested = torch.arange(n, dtype=torch.int64) % n_classes
    fake_features, predicted = [], []
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for start in range(0, n, batch_size):
            k = min(batch_size, n - start)
            labels = requested[start : start + k] if conditional else None
            x = sample(k, labels)
            if tuple(x.shape) != (k, *IMAGE_SHAPE):
                raise ValueError(f"sample({k}, labels) returned shape {tuple(x.shape)}, expected {(k, *IMAGE_SHAPE)}")
            x = x.to(device, torch.float32)
            if not torch.isfinite(x).all():
                raise SpecganError(f"the generator produced NaN or infinite values (samples {start}..{start + k - 1})")
            feats = classifier.features(x)
            fake_features.append(feats.double().cpu())
            predicted.append(classifier.head(feats).argmax(dim=1).cpu())
            done += k
            if on_progress is not None:
                on_progress(done, total)
    mu_fake, sigma_fake = feature_statistics(torch.cat(fake_features))
    predicted = torch.cat(predicted)

    histogram = torch.bincount(predicted, minlength=n_classes).double() / n
    fake_spread = class_spread(torch.cat(fake_features), requested if conditional else predicted, n_classes)
    real_spread = class_spread(torch.cat(real_features), real_test.labels.cpu(), n_classes)
    ratios = fake_spread / real_spread
    ratios = ratios[torch.isfinite(ratios)]
    result: dict = {
        "fd": frechet_distance(mu_fake, sigma_fake, mu_real, sigma_real),
        "class_entropy": entropy_bits(histogram.numpy()),
        "class_histogram": [float(p) for p in histogram],
        "within_class_diversity": float(ratios.mean()) if len(ratios) else None,
        "n": n,
        "n_real": len(real_test),
    }
    if conditional:
        result["label_accuracy"] = float((predicted == requested).double().mean())
    return result


def class_spread(features: Tensor, classes: Tensor, n_classes: int) -> Tensor:
    """Total variance (trace of the unbiased covariance) of the rows of ``features`` ``(N, d)`` of each class,
    ``(n_classes,)`` float64; NaN for a class with fewer than two rows."""
    spread = torch.full((n_classes,), float("nan"), dtype=torch.float64)
    for c in range(n_classes):
        rows = features[classes == c].double()
        if len(rows) >= 2:
            spread[c] = rows.var(dim=0, unbiased=True).sum()
    return spread


def entropy_bits(p: np.ndarray) -> float:
    """Shannon entropy ``-Σ p log2 p`` in bits of a probability vector (zeros contribute 0)."""
    p = np.asarray(p, dtype=np.float64)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0 if p.size else 0.0


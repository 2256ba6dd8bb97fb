"""The Fréchet distance between two Gaussians fitted to feature vectors (the formula behind FID).

``d² = ||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^{1/2})``, computed in float64 with the matrix square root from
:func:`scipy.linalg.sqrtm`, handled the way the reference FID code (pytorch-fid, TTUR) handles it: a diagonal
offset ``eps * I`` is added to both covariances when the square root of their product is not finite or (as can
happen when the product is singular) does not square back to the product, and imaginary parts left by rounding
are dropped when they are small.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

#: Relative residual ``||X X - A||_F / ||A||_F`` above which the square root ``X`` of ``A`` is not trusted.
_SQRTM_TOLERANCE = 1e-3


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a set of feature vectors.

    Args:
        features: ``(N, D)``, one row per sample; ``N >= 2``.

    Returns:
        ``(mu, sigma)``: float64 arrays of shapes ``(D,)`` and ``(D, D)``; ``sigma`` is the unbiased sample
        covariance (``np.cov(features, rowvar=False)``, i.e. divided by ``N - 1``).
    """
    if isinstance(features, Tensor):
        features = features.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must have shape (N >= 2, D), got {x.shape}")
    mu = x.mean(axis=0)
    sigma = np.cov(x, rowvar=False)
    return mu, np.atleast_2d(sigma)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, eps: float = 1e-6
) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (squared, as FID reports it).

    Args:
        mu1, mu2: means, shape ``(D,)``.
        sigma1, sigma2: covariances, shape ``(D, D)``, symmetric positive semi-definite.
        eps: diagonal offset added to both covariances when the square root of their product is not finite, or
            is inaccurate (relative residual above 1e-3, as can happen when the product is singular).

    Returns:
        ``||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^{1/2})`` as a Python float (>= 0 up to rounding).

    Raises:
        ValueError: shapes disagree, or the square root keeps a large imaginary part (the inputs are not
            covariance matrices).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"mismatched shapes: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 {sigma1.shape}, sigma2 {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if covmean is None:
        offset = np.eye(d) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"matrix square root has an imaginary part of {np.max(np.abs(covmean.imag)):.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _sqrtm(a: np.ndarray) -> np.ndarray | None:
    """``scipy.linalg.sqrtm(a)``, or ``None`` when the result is not finite or does not square back to ``a``.

    For a singular ``a`` (a covariance with dead feature dimensions, a collapsed generator) scipy warns that the
    result "might be inaccurate"; the residual check decides instead, so an exact root such as that of the zero
    matrix is kept, and only an inaccurate one falls back to the ``eps`` offset (which biases the trace by about
    ``sqrt(eps)`` per dimension).
    """
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        x = scipy.linalg.sqrtm(a)
        if not np.isfinite(x).all():
            return None
        scale = np.linalg.norm(a)
        if scale > 0 and np.linalg.norm(x @ x - a) / scale > _SQRTM_TOLERANCE:
            return None
    return x

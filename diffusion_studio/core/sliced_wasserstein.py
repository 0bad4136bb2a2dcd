"""The sliced Wasserstein distance between two point clouds (Rabin et al. 2011; Bonneel et al. 2015).

    SW₁(μ, ν) = E_θ [ W₁(⟨θ, X⟩, ⟨θ, Y⟩) ],  θ uniform on the unit sphere,

estimated with `projections` random directions θ from a seeded generator. In one dimension the
Wasserstein-1 distance is the area between the quantile functions, W₁ = ∫₀¹ |F⁻¹(u) − G⁻¹(u)| du;
for empirical distributions both quantile functions are step functions of the sorted
projections, so the integral is an exact finite sum (clouds of different sizes included).

The 2D lab uses it to measure how close the samples are to the data (and how far the initial
noise x_T was), so the effect of the sampler and of the number of steps is a number.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from diffusion_studio.errors import UsageError

__all__ = ["DEFAULT_PROJECTIONS", "projection_directions", "sliced_wasserstein", "wasserstein_1d"]

DEFAULT_PROJECTIONS = 256


def projection_directions(count: int, dim: int, seed: int = 0) -> npt.NDArray[np.float64]:
    """`count` directions uniform on the unit sphere S^{dim−1} (normalised Gaussians), [count, dim]."""
    if count < 1 or dim < 1:
        raise UsageError(f"Need at least one projection and one dimension, got {count} and {dim}.")
    rng = np.random.default_rng([int(seed), 0x5A])
    theta = rng.standard_normal((count, dim))
    norms = np.linalg.norm(theta, axis=1, keepdims=True)
    while np.any(norms == 0.0):  # probability zero, but never divide by it
        theta = np.where(norms == 0.0, rng.standard_normal((count, dim)), theta)
        norms = np.linalg.norm(theta, axis=1, keepdims=True)
    result: npt.NDArray[np.float64] = theta / norms
    return result


def wasserstein_1d(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """W₁ between the empirical distributions of the rows of `a` [P, n] and `b` [P, m] (each row one
    1D sample), exactly: Σ_k Δu_k |F⁻¹(u_k) − G⁻¹(u_k)| over the merged quantile levels. Shape [P]."""
    xa = np.sort(np.atleast_2d(np.asarray(a, dtype=np.float64)), axis=1)
    xb = np.sort(np.atleast_2d(np.asarray(b, dtype=np.float64)), axis=1)
    n, m = xa.shape[1], xb.shape[1]
    if n == m:  # the same levels i/n: the mean distance of the sorted values
        result: npt.NDArray[np.float64] = np.mean(np.abs(xa - xb), axis=1)
        return result
    # The quantile function of n points is xa[i] on (i/n, (i+1)/n]; merge both sets of jumps.
    levels = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    widths = np.diff(levels, prepend=0.0)
    middle = levels - widths / 2  # a level inside each interval picks the right step of each function
    ia = np.minimum((middle * n).astype(np.int64), n - 1)
    ib = np.minimum((middle * m).astype(np.int64), m - 1)
    result = np.abs(xa[:, ia] - xb[:, ib]) @ widths
    return result


def _cloud(points: npt.ArrayLike, name: str) -> npt.NDArray[np.float64]:
    cloud = np.asarray(points, dtype=np.float64)
    if cloud.ndim != 2 or cloud.shape[0] == 0:
        raise UsageError(f"The {name} point cloud must be a non-empty array [N, dim], got shape {cloud.shape}.")
    if not np.all(np.isfinite(cloud)):
        raise UsageError(f"The {name} point cloud holds NaN or infinite values.")
    return cloud


def sliced_wasserstein(
    a: npt.ArrayLike, b: npt.ArrayLike, *, projections: int = DEFAULT_PROJECTIONS, seed: int = 0
) -> float:
    """SW₁ between point clouds a [n, d] and b [m, d]: the mean of W₁ over `projections` random
    directions (the same directions for the same seed, so distances of one seed compare)."""
    xa, xb = _cloud(a, "first"), _cloud(b, "second")
    if xa.shape[1] != xb.shape[1]:
        raise UsageError(f"The point clouds differ in dimension: {xa.shape[1]} and {xb.shape[1]}.")
    theta = projection_directions(projections, xa.shape[1], seed)
    return float(np.mean(wasserstein_1d(theta @ xa.T, theta @ xb.T)))

"""A cheap live preview for latent diffusion: RGB ≈ A·z + b per latent pixel (numpy).

Decoding x̂_0 with the VAE at every step costs as much as a U-Net call; instead the exporter
fits, for each model, an affine map from the C latent channels to RGB by least squares:

    min_{A,b} Σ_samples Σ_pixels ‖ A·z_ij + b − x̄_ij ‖²

where z is a latent as the VAE decoder takes it (the sampler's latent divided by the scaling
factor) and x̄ is the decoded image D(z) area-averaged over factor × factor blocks, so x̄ has
the latent's resolution. The preview of a step is A·(ẑ_0 / scaling_factor) + b, clipped to
[−1, 1]: an image at latent resolution, measured for this VAE rather than copied constants.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating]


def area_downsample(images: FloatArray, factor: int) -> NDArray[np.float64]:
    """[N,C,H,W] -> [N,C,H/factor,W/factor]: the mean of each factor × factor block."""
    n, c, h, w = images.shape
    if h % factor or w % factor:
        raise ValueError(f"image size {h}x{w} is not a multiple of the factor {factor}")
    blocks = np.asarray(images, dtype=np.float64).reshape(n, c, h // factor, factor, w // factor, factor)
    mean: NDArray[np.float64] = blocks.mean(axis=(3, 5))
    return mean


def fit_preview(latents: FloatArray, images: FloatArray, factor: int) -> tuple[NDArray[np.float64],
                                                                              NDArray[np.float64]]:
    """(A [3,C], b [3]) minimising the squared error of A·z + b against the downsampled images.

    latents [N,C,h,w] (the decoder's input), images [N,3,h·factor,w·factor] (its output).
    """
    z = np.asarray(latents, dtype=np.float64)
    n, c, h, w = z.shape
    target = area_downsample(images, factor)
    if target.shape != (n, 3, h, w):
        raise ValueError(f"images {np.shape(images)} do not match latents {z.shape} at factor {factor}")
    design = np.concatenate([z.transpose(0, 2, 3, 1).reshape(-1, c), np.ones((n * h * w, 1))], axis=1)
    rhs = target.transpose(0, 2, 3, 1).reshape(-1, 3)
    solution, *_ = np.linalg.lstsq(design, rhs, rcond=None)
    return solution[:c].T.copy(), solution[c].copy()


def apply_preview(latents: FloatArray, matrix: FloatArray, bias: FloatArray) -> NDArray[np.float32]:
    """[N,C,h,w] decoder-input latents -> RGB [N,3,h,w] in [−1, 1] (A·z + b, clipped)."""
    a = np.asarray(matrix, dtype=np.float32)
    b = np.asarray(bias, dtype=np.float32)
    rgb = np.einsum("rc,nchw->nrhw", a, np.asarray(latents, dtype=np.float32)) + b[None, :, None, None]
    out: NDArray[np.float32] = np.clip(rgb, -1.0, 1.0).astype(np.float32)
    return out

"""Classifier-free guidance (Ho & Salimans 2022) with one batched network call per step.

ε̂ = ε_u + w (ε_c − ε_u). The caller picks the "unconditional" context: the empty
prompt's embedding, or a negative prompt's embedding, which then takes its place.

The combination is applied to the raw network output whatever it predicts (ε, v or x_0): the
conversions to ε̂ are affine in the output with weights that sum to one, so guiding v̂ or x̂_0 is
guiding ε̂. A learned_range output [N, 2C, …] is guided in its first C channels only; the variance
half is the conditional prediction's (GLIDE, and diffusers' pipelines, do the same).
"""

from __future__ import annotations

import numpy as np

from diffusion_studio.core.params import check_guidance
from diffusion_studio.core.prediction import VarianceKind, parse_variance_kind
from diffusion_studio.core.sampling_loop import Denoiser, EpsFn
from diffusion_studio.errors import UsageError

__all__ = ["guided_eps_fn", "combine_guidance"]


def combine_guidance(
    eps_uncond: np.ndarray, eps_cond: np.ndarray, w: float, variance: str | VarianceKind = VarianceKind.FIXED_LARGE
) -> np.ndarray:
    """ε̂ = ε_u + w (ε_c − ε_u): w = 0 is unconditional, w = 1 conditional, w > 1 extrapolates.

    With variance "learned_range" the outputs are [N, 2C, …]: only the first C channels are
    combined, the variance channels are taken from the conditional output.
    """
    if parse_variance_kind(variance) is VarianceKind.LEARNED_RANGE:
        if eps_cond.ndim < 2 or eps_cond.shape[1] % 2:
            raise UsageError(f"a learned_range output needs an even channel count, got shape {eps_cond.shape}.")
        c = eps_cond.shape[1] // 2
        guided_half = combine_guidance(eps_uncond[:, :c], eps_cond[:, :c], w)
        both: np.ndarray = np.concatenate([guided_half, eps_cond[:, c:].astype(np.float32)], axis=1)
        return both
    guided: np.ndarray = (eps_uncond + np.float32(w) * (eps_cond - eps_uncond)).astype(np.float32)
    return guided


def _check_context(name: str, context: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    context = np.asarray(context, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.float32)
    if context.ndim != 3:
        raise UsageError(f"{name} must have shape [N, L, D], got {context.shape}.")
    if mask.shape != context.shape[:2]:
        raise UsageError(f"the mask of {name} must have shape {context.shape[:2]}, got {mask.shape}.")
    return context, mask


def _to_batch(name: str, array: np.ndarray, n: int) -> np.ndarray:
    """Repeat a batch-1 array to batch n; any other batch size must equal n."""
    if array.shape[0] == n:
        return array
    if array.shape[0] == 1:
        return np.ascontiguousarray(np.broadcast_to(array, (n,) + array.shape[1:]))
    raise UsageError(f"{name} has batch size {array.shape[0]} but the images have {n}.")


def guided_eps_fn(
    denoiser: Denoiser,
    context: np.ndarray,
    mask: np.ndarray,
    uncond_context: np.ndarray,
    uncond_mask: np.ndarray,
    w: float,
    variance: str | VarianceKind = VarianceKind.FIXED_LARGE,
) -> EpsFn:
    """An EpsFn that returns the guided output from ONE denoiser call on a [2N] batch.

    Contexts of batch size 1 are repeated to the image batch N. With w = 1 only the
    conditional half is evaluated (batch N), with w = 0 only the unconditional half.
    `variance` is the model's (`combine_guidance`: learned_range guides the prediction half only).
    """
    w = check_guidance(w)
    variance = parse_variance_kind(variance)
    context, mask = _check_context("context", context, mask)
    uncond_context, uncond_mask = _check_context("uncond_context", uncond_context, uncond_mask)
    if context.shape[1:] != uncond_context.shape[1:]:
        raise UsageError(
            f"context and uncond_context must agree in [L, D], got {context.shape[1:]} and {uncond_context.shape[1:]}."
        )

    def eps_fn(x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        n = x_t.shape[0]
        if w == 1.0:
            return denoiser(x_t, t, _to_batch("context", context, n), _to_batch("context", mask, n))
        if w == 0.0:
            return denoiser(
                x_t, t, _to_batch("uncond_context", uncond_context, n), _to_batch("uncond_context", uncond_mask, n)
            )
        # One call: rows [0, N) unconditional, rows [N, 2N) conditional.
        x2 = np.concatenate([x_t, x_t])
        t2 = np.concatenate([t, t])
        c2 = np.concatenate([_to_batch("uncond_context", uncond_context, n), _to_batch("context", context, n)])
        m2 = np.concatenate([_to_batch("uncond_context", uncond_mask, n), _to_batch("context", mask, n)])
        eps = np.asarray(denoiser(x2, t2, c2, m2), dtype=np.float32)
        return combine_guidance(eps[:n], eps[n:], w, variance)

    return eps_fn

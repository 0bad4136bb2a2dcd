"""The forward (noising) process of DDPM and the identities between x_0, x_t and ε.

All coefficient math is float64; arrays that go in as float32 come out as float32.
`t` is the paper's timestep (1 … T), either one int for the whole batch or an int
array of shape [N] (one per sample of an [N, …] batch).
"""

from __future__ import annotations

import numpy as np

from diffusion_studio.core.schedule import Schedule, posterior
from diffusion_studio.errors import UsageError

__all__ = [
    "coefficient",
    "q_sample",
    "q_step",
    "x0_from_eps",
    "eps_from_x0",
    "q_posterior",
]


def _check_t(schedule: Schedule, t: int | np.ndarray) -> np.ndarray:
    t_arr = np.asarray(t)
    if not np.issubdtype(t_arr.dtype, np.integer):
        raise UsageError(f"timesteps must be integers, got dtype {t_arr.dtype}.")
    if t_arr.size and (t_arr.min() < 1 or t_arr.max() > schedule.T):
        raise UsageError(f"timesteps must lie in 1..{schedule.T}, got {t_arr.min()}..{t_arr.max()}.")
    return t_arr


def coefficient(values: np.ndarray, t: int | np.ndarray, ndim: int) -> np.ndarray:
    """values[t − 1] as float64, shaped to broadcast against an array with `ndim` dims.

    A scalar t gives a 0-d array; t of shape [N] gives shape [N, 1, …, 1].
    """
    picked: np.ndarray = np.asarray(values, dtype=np.float64)[np.asarray(t) - 1]
    if picked.ndim == 0:
        return picked
    shaped: np.ndarray = picked.reshape(picked.shape + (1,) * (ndim - picked.ndim))
    return shaped


def _out_dtype(*arrays: np.ndarray) -> np.dtype:
    return np.result_type(*(np.asarray(a).dtype for a in arrays), np.float32)


def q_sample(schedule: Schedule, x_0: np.ndarray, t: int | np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Sample q(x_t | x_0) in closed form: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε  (DDPM eq. 4)."""
    t = _check_t(schedule, t)
    if np.shape(x_0) != np.shape(eps):
        raise UsageError(f"x_0 and eps must have the same shape, got {np.shape(x_0)} and {np.shape(eps)}.")
    a = coefficient(schedule.sqrt_alphas_cumprod, t, np.ndim(x_0))
    b = coefficient(schedule.sqrt_one_minus_alphas_cumprod, t, np.ndim(x_0))
    x_t: np.ndarray = (a * x_0 + b * eps).astype(_out_dtype(x_0, eps))
    return x_t


def q_step(schedule: Schedule, x_prev: np.ndarray, t: int | np.ndarray, z: np.ndarray) -> np.ndarray:
    """One Markov step q(x_t | x_{t−1}) = N(√(1 − β_t) x_{t−1}, β_t I)  (DDPM eq. 2)."""
    t = _check_t(schedule, t)
    if np.shape(x_prev) != np.shape(z):
        raise UsageError(f"x_prev and z must have the same shape, got {np.shape(x_prev)} and {np.shape(z)}.")
    beta = coefficient(schedule.betas, t, np.ndim(x_prev))
    x_t: np.ndarray = (np.sqrt(1.0 - beta) * x_prev + np.sqrt(beta) * z).astype(_out_dtype(x_prev, z))
    return x_t


def x0_from_eps(schedule: Schedule, x_t: np.ndarray, t: int | np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Invert eq. 4 for x_0: x_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t."""
    t = _check_t(schedule, t)
    a = coefficient(schedule.sqrt_alphas_cumprod, t, np.ndim(x_t))
    b = coefficient(schedule.sqrt_one_minus_alphas_cumprod, t, np.ndim(x_t))
    x_0: np.ndarray = ((x_t - b * eps) / a).astype(_out_dtype(x_t, eps))
    return x_0


def eps_from_x0(schedule: Schedule, x_t: np.ndarray, t: int | np.ndarray, x_0: np.ndarray) -> np.ndarray:
    """Invert eq. 4 for ε: ε = (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t)."""
    t = _check_t(schedule, t)
    a = coefficient(schedule.sqrt_alphas_cumprod, t, np.ndim(x_t))
    b = coefficient(schedule.sqrt_one_minus_alphas_cumprod, t, np.ndim(x_t))
    eps: np.ndarray = ((x_t - a * x_0) / b).astype(_out_dtype(x_t, x_0))
    return eps


def q_posterior(
    schedule: Schedule,
    x_0: np.ndarray,
    x_t: np.ndarray,
    t: int | np.ndarray,
    t_prev: int | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """q(x_{t_prev} | x_t, x_0) = N(μ̃, β̃ I)  (DDPM eqs. 6–7; t_prev = t − 1 unless given).

    On a sub-sequence of timesteps (0 ≤ t_prev < t) the step's β is 1 − ᾱ_t/ᾱ_{t_prev}
    (`schedule.posterior`). Returns (mean, variance); the variance is float64, broadcastable
    against x_t. The mean is float32 for float32 inputs, float64 if either input is float64.
    """
    t = _check_t(schedule, t)
    s = t - 1 if t_prev is None else np.asarray(t_prev)
    if not np.issubdtype(s.dtype, np.integer) or s.shape not in ((), t.shape) or np.any((s < 0) | (s >= t)):
        raise UsageError(f"t_prev must be integers with 0 <= t_prev < t, got {t_prev!r} for t = {t!r}.")
    ndim = np.ndim(x_t)
    ab_t = coefficient(schedule.alphas_cumprod, t, ndim)
    ab_s = coefficient(schedule.alphas_cumprod_prev, s + 1, ndim)  # ᾱ_s; that array starts at ᾱ_0 = 1
    post = posterior(ab_t, ab_s)
    mean = post.mean_coef1 * x_0 + post.mean_coef2 * x_t
    return mean.astype(_out_dtype(x_0, x_t)), post.variance

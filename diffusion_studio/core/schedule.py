"""Noise schedules: β_1 … β_T and every quantity derived from them, precomputed in float64.

Arrays have shape [T] and are indexed by the paper's timestep as ``array[t - 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from diffusion_studio.errors import UsageError

__all__ = [
    "SCHEDULE_ALIASES",
    "ScheduleKind",
    "Schedule",
    "Posterior",
    "make_schedule",
    "parse_schedule_kind",
    "posterior",
]

LINEAR_BETA_START = 1e-4
LINEAR_BETA_END = 0.02
COSINE_S = 0.008
MAX_BETA = 0.999


class ScheduleKind(str, Enum):
    LINEAR = "linear"                # DDPM §4
    COSINE = "cosine"                # Improved DDPM eq. 17 (diffusers' "squaredcos_cap_v2")
    SCALED_LINEAR = "scaled_linear"  # √β linear (latent diffusion; diffusers' "scaled_linear")


# Other tools' names for our kinds (diffusers' `beta_schedule`).
SCHEDULE_ALIASES: dict[str, ScheduleKind] = {"squaredcos_cap_v2": ScheduleKind.COSINE}


@dataclass(frozen=True, eq=False)
class Schedule:
    """A frozen DDPM schedule. Every array is read-only float64 of shape [T], index t-1."""

    kind: ScheduleKind
    T: int
    betas: np.ndarray                           # β_t
    alphas: np.ndarray                          # α_t = 1 − β_t
    alphas_cumprod: np.ndarray                  # ᾱ_t = ∏_{i≤t} α_i
    alphas_cumprod_prev: np.ndarray             # ᾱ_{t−1}, with ᾱ_0 = 1
    sqrt_alphas_cumprod: np.ndarray             # √ᾱ_t
    sqrt_one_minus_alphas_cumprod: np.ndarray   # √(1 − ᾱ_t)
    posterior_variance: np.ndarray              # β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t
    posterior_log_variance_clipped: np.ndarray  # log β̃_t with β̃_1 (= 0) replaced by β̃_2
    posterior_mean_coef1: np.ndarray            # μ̃_t = coef1 · x_0 + coef2 · x_t  (DDPM eq. 7)
    posterior_mean_coef2: np.ndarray
    snr: np.ndarray                             # ᾱ_t / (1 − ᾱ_t)

    def alpha_bar(self, t: int) -> float:
        """ᾱ_t for t ∈ {0, …, T}, with ᾱ_0 = 1 (the clean image)."""
        if t == 0:
            return 1.0
        return float(self.alphas_cumprod[t - 1])


class Posterior(NamedTuple):
    """Coefficients of q(x_s | x_t, x_0) = N(mean_coef1 · x_0 + mean_coef2 · x_t, variance · I), s < t."""

    beta: np.ndarray        # the step's β = 1 − ᾱ_t/ᾱ_s (β_t when s = t − 1)
    mean_coef1: np.ndarray  # √ᾱ_s β / (1 − ᾱ_t)
    mean_coef2: np.ndarray  # √(1 − β) (1 − ᾱ_s) / (1 − ᾱ_t)
    variance: np.ndarray    # β̃ = (1 − ᾱ_s)/(1 − ᾱ_t) · β


def posterior(alpha_bar_t: npt.ArrayLike, alpha_bar_s: npt.ArrayLike) -> Posterior:
    """The posterior between timestep t and any earlier s, from ᾱ_t and ᾱ_s (float64, elementwise).

    DDPM eqs. 6–7 with β_t replaced by the step's β = 1 − ᾱ_t/ᾱ_s, so that it holds on any
    sub-sequence of timesteps (Improved DDPM §4; DDIM eq. 16 with η = 1 has σ² = β̃); s = t − 1
    gives the paper's β_t, β̃_t and μ̃_t. ᾱ_0 = 1 (the clean image) is a valid ᾱ_s.
    """
    ab_t = np.asarray(alpha_bar_t, dtype=np.float64)
    ab_s = np.asarray(alpha_bar_s, dtype=np.float64)
    beta = 1.0 - ab_t / ab_s
    return Posterior(
        beta=beta,
        mean_coef1=np.sqrt(ab_s) * beta / (1.0 - ab_t),
        mean_coef2=np.sqrt(1.0 - beta) * (1.0 - ab_s) / (1.0 - ab_t),
        variance=beta * (1.0 - ab_s) / (1.0 - ab_t),
    )


def parse_schedule_kind(kind: str | ScheduleKind) -> ScheduleKind:
    """Turn 'linear' / 'cosine' / 'scaled_linear' (or diffusers' 'squaredcos_cap_v2') into a ScheduleKind.

    Raises UsageError for any other name.
    """
    if isinstance(kind, str) and kind in SCHEDULE_ALIASES:
        return SCHEDULE_ALIASES[kind]
    try:
        return ScheduleKind(kind)
    except ValueError:
        choices = ", ".join(k.value for k in ScheduleKind)
        raise UsageError(f"unknown schedule {kind!r}; choose one of {choices}.") from None


def _linear_betas(T: int) -> np.ndarray:
    # DDPM §4: β linear from 1e-4 to 0.02 for T = 1000; for other T the endpoints are
    # scaled by 1000/T (as in improved-diffusion) so that ᾱ_T stays close to the T=1000 value;
    # for T ≤ 20 the scaled β would reach 1, so β is clipped at 0.999 as for the cosine schedule.
    if T == 1000:
        return np.linspace(LINEAR_BETA_START, LINEAR_BETA_END, T, dtype=np.float64)
    scale = 1000.0 / T
    betas = np.linspace(scale * LINEAR_BETA_START, scale * LINEAR_BETA_END, T, dtype=np.float64)
    return np.minimum(betas, MAX_BETA)


def _check_beta_ends(beta_start: float | None, beta_end: float | None) -> tuple[float, float] | None:
    """Explicit β ends: both or neither, finite, 0 < β_start ≤ β_end < 1."""
    if beta_start is None and beta_end is None:
        return None
    values = []
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise UsageError(f"{name} must be a number in (0, 1) (give both β ends or neither), got {value!r}.")
        values.append(float(value))
    start, end = values
    if not (math.isfinite(start) and math.isfinite(end) and 0.0 < start <= end < 1.0):
        raise UsageError(f"the β ends must satisfy 0 < beta_start <= beta_end < 1, got {start!r} and {end!r}.")
    return start, end


def _cosine_betas(T: int) -> np.ndarray:
    # Improved DDPM eq. 17: ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2);
    # β_t = 1 − ᾱ_t/ᾱ_{t−1}, clipped at 0.999 to avoid the singularity near t = T.
    def f(t: float) -> float:
        return math.cos((t / T + COSINE_S) / (1.0 + COSINE_S) * math.pi / 2.0) ** 2

    betas = [min(1.0 - f(i + 1) / f(i), MAX_BETA) for i in range(T)]
    return np.asarray(betas, dtype=np.float64)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def make_schedule(
    kind: str | ScheduleKind = "linear",
    T: int = 1000,
    beta_start: float | None = None,
    beta_end: float | None = None,
) -> Schedule:
    """Build a linear (DDPM), cosine (Improved DDPM) or scaled-linear schedule with T steps.

    `beta_start` / `beta_end` (both or neither) set the β ends of `linear` and `scaled_linear`
    exactly as diffusers does: β = linspace(β_start, β_end, T), resp. linspace(√β_start, √β_end, T)²,
    with no 1000/T scaling. Without them `linear` is DDPM's (scaled for T ≠ 1000, see
    `_linear_betas`) and `scaled_linear` uses diffusers' default ends 1e-4 and 0.02.
    The cosine schedule has no β ends (UsageError if given).
    """
    kind = parse_schedule_kind(kind)
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise UsageError(f"the number of diffusion steps T must be a positive integer, got {T!r}.")
    T = int(T)
    ends = _check_beta_ends(beta_start, beta_end)
    if kind is ScheduleKind.COSINE:
        if ends is not None:
            raise UsageError("the cosine schedule takes no beta_start / beta_end (its β come from eq. 17).")
        betas = _cosine_betas(T)
    elif kind is ScheduleKind.SCALED_LINEAR:
        # Latent diffusion's schedule: √β_t linear from √β_start to √β_end.
        start, end = ends if ends is not None else (LINEAR_BETA_START, LINEAR_BETA_END)
        betas = np.linspace(math.sqrt(start), math.sqrt(end), T, dtype=np.float64) ** 2
    elif ends is not None:
        betas = np.linspace(ends[0], ends[1], T, dtype=np.float64)
    else:
        betas = _linear_betas(T)

    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    one_minus = 1.0 - alphas_cumprod
    # DDPM eq. 7: posterior q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I), tabulated for every t.
    post = posterior(alphas_cumprod, alphas_cumprod_prev)
    posterior_variance = post.variance
    # β̃_1 = 0, so its log is clipped to log β̃_2 (improved-diffusion); with T = 1, to log β_1.
    first = posterior_variance[1] if T > 1 else betas[0]
    posterior_log_variance_clipped = np.log(np.append(first, posterior_variance[1:]))

    return Schedule(
        kind=kind,
        T=T,
        betas=_frozen(betas),
        alphas=_frozen(alphas),
        alphas_cumprod=_frozen(alphas_cumprod),
        alphas_cumprod_prev=_frozen(alphas_cumprod_prev),
        sqrt_alphas_cumprod=_frozen(np.sqrt(alphas_cumprod)),
        sqrt_one_minus_alphas_cumprod=_frozen(np.sqrt(one_minus)),
        posterior_variance=_frozen(posterior_variance),
        posterior_log_variance_clipped=_frozen(posterior_log_variance_clipped),
        posterior_mean_coef1=_frozen(post.mean_coef1),
        posterior_mean_coef2=_frozen(post.mean_coef2),
        snr=_frozen(alphas_cumprod / one_minus),
    )

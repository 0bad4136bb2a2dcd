"""The true posterior q(x_{t−1} | x_t, x_0) next to the model's p_θ(x_{t−1} | x_t), for one x_t.

DDPM (Ho et al. 2020):

- eqs. 6–7: q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) with μ̃_t = c₁ x_0 + c₂ x_t,
  c₁ = √ᾱ_{t−1} β_t / (1 − ᾱ_t), c₂ = √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) β_t;
- eq. 11: p_θ(x_{t−1} | x_t) = N(μ_θ, σ_t² I) with μ_θ = μ̃_t(x_t, x̂_0), the same formula with the
  model's x̂_0 in place of x_0, and σ_t² = β_t or β̃_t (§3.2);
- so μ̃_t − μ_θ = c₁ (x_0 − x̂_0), and the loss term L_{t−1} is KL(q ‖ p_θ) (eq. 5).

Both are sampled with the same z (x_{t−1} = mean + std · z); at t = 1 the sampler adds no noise
(Algorithm 2), and q is a point mass at x_0 (β̃_1 = 0), so both samples are their means.
Pure numpy, float64 coefficients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffusion_studio.core.forward import q_posterior
from diffusion_studio.core.params import DdpmVariance, parse_ddpm_variance
from diffusion_studio.core.schedule import Schedule
from diffusion_studio.errors import UsageError

__all__ = ["PosteriorComparison", "compare_posteriors", "gaussian_kl_per_dim"]


@dataclass(frozen=True)
class PosteriorComparison:
    """q(x_{t−1} | x_t, x_0) and p_θ(x_{t−1} | x_t) at one t; arrays float32 shaped like x_t."""

    t: int
    coef_x0: float  # c₁ = √ᾱ_{t−1} β_t / (1 − ᾱ_t)
    coef_xt: float  # c₂ = √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)
    beta: float  # β_t
    beta_tilde: float  # β̃_t, the variance of q
    sigma2: float  # σ_t², the variance of p_θ (0 at t = 1: no noise on the last step)
    variance: DdpmVariance  # which σ_t² was asked for
    mean_q: np.ndarray  # μ̃_t(x_t, x_0)
    mean_p: np.ndarray  # μ_θ = μ̃_t(x_t, x̂_0)
    sample_q: np.ndarray  # μ̃_t + √β̃_t z
    sample_p: np.ndarray  # μ_θ + σ_t z
    mean_distance: float  # ‖μ̃_t − μ_θ‖², summed over every pixel and channel
    kl_per_dim: float | None  # KL(q ‖ p_θ) / D; None at t = 1 (both are point masses)

    @property
    def dims(self) -> int:
        return int(self.mean_q.size)


def gaussian_kl_per_dim(mean_q: np.ndarray, var_q: float, mean_p: np.ndarray, var_p: float) -> float:
    """KL(N(μ_q, v_q I) ‖ N(μ_p, v_p I)) / D = ½ (v_q/v_p − 1 + ln(v_p/v_q)) + ‖μ_q − μ_p‖² / (2 v_p D)."""
    if not (var_q > 0.0 and var_p > 0.0):
        raise UsageError(f"Both variances must be positive, got {var_q} and {var_p}.")
    d = np.asarray(mean_q, np.float64) - np.asarray(mean_p, np.float64)
    sq = float(np.sum(d * d))
    return 0.5 * (var_q / var_p - 1.0 + math.log(var_p / var_q)) + sq / (2.0 * var_p * d.size)


def compare_posteriors(
    schedule: Schedule,
    x_0: np.ndarray,
    x_t: np.ndarray,
    x0_pred: np.ndarray,
    t: int,
    z: np.ndarray,
    variance: str | DdpmVariance = DdpmVariance.BETA,
) -> PosteriorComparison:
    """q(x_{t−1} | x_t, x_0) beside p_θ(x_{t−1} | x_t) with μ_θ = μ̃_t(x_t, x̂_0), sampled with the same z."""
    t = int(t)
    if not 1 <= t <= schedule.T:
        raise UsageError(f"t must lie in 1..{schedule.T}, got {t}.")
    shapes = {np.shape(x_0), np.shape(x_t), np.shape(x0_pred), np.shape(z)}
    if len(shapes) != 1:
        raise UsageError(f"x_0, x_t, x̂_0 and z must have one shape, got {sorted(shapes)}.")
    kind = parse_ddpm_variance(variance)
    i = t - 1
    beta = float(schedule.betas[i])
    beta_tilde = float(schedule.posterior_variance[i])
    x_t64 = np.asarray(x_t, np.float64)
    mean_q, _ = q_posterior(schedule, np.asarray(x_0, np.float64), x_t64, t)  # eqs. 6–7
    mean_p, _ = q_posterior(schedule, np.asarray(x0_pred, np.float64), x_t64, t)  # eq. 11
    last = t == 1
    sigma2 = 0.0 if last else (beta if kind is DdpmVariance.BETA else beta_tilde)
    z64 = np.asarray(z, np.float64)
    sample_q = mean_q + math.sqrt(beta_tilde) * z64
    sample_p = mean_p + math.sqrt(sigma2) * z64
    diff = mean_q - mean_p
    return PosteriorComparison(
        t=t,
        coef_x0=float(schedule.posterior_mean_coef1[i]),
        coef_xt=float(schedule.posterior_mean_coef2[i]),
        beta=beta,
        beta_tilde=beta_tilde,
        sigma2=sigma2,
        variance=kind,
        mean_q=mean_q.astype(np.float32),
        mean_p=mean_p.astype(np.float32),
        sample_q=sample_q.astype(np.float32),
        sample_p=sample_p.astype(np.float32),
        mean_distance=float(np.sum(diff * diff)),
        kl_per_dim=None if last else gaussian_kl_per_dim(mean_q, beta_tilde, mean_p, sigma2),
    )

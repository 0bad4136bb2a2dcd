"""The variational bound term L_t of DDPM (Ho et al. 2020 eq. 5, §3.3), for learned variances.

Improved DDPM (Nichol & Dhariwal 2021) trains the reverse variance Σ_θ(x_t, t) with
L_hybrid = L_simple + λ·L_vlb, λ = 0.001 (§3.1), where the network outputs an interpolation
coefficient v per dimension and (eq. 15)

    Σ_θ = exp(v·log β_t + (1 − v)·log β̃_t),  v = (model_v + 1)/2.

L_vlb = L_0 + L_1 + … + L_{T−1} + L_T (in the paper's 0-based t): with t ~ U{1..T} (here 1-based),
T·L_t is an unbiased estimate of the sum, so λ·L_vlb = λ·T·L_t. For t > 1, L_t is the KL between
the Gaussian posterior q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) and p_θ(x_{t−1} | x_t) = N(μ_θ, Σ_θ);
at t = 1 it is the discretized Gaussian decoder's negative log-likelihood −log p_θ(x_0 | x_1)
(DDPM eq. 13). Values are in bits per dimension. L_T (the prior term) has no parameters and is left out.

The mean μ_θ comes from a detached ε̂ (the stop-gradient of §3.1): L_vlb only trains the variance.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from diffusion_studio.core.schedule import Schedule

VLB_WEIGHT = 0.001  # λ of L_hybrid (Improved DDPM §3.1)
_LN2 = math.log(2.0)
_HALF_BIN = 1.0 / 255.0  # half the width of one of the 256 levels of an 8-bit image scaled to [−1, 1]
_EDGE = 0.999  # below −_EDGE (above +_EDGE) a value is the lowest (highest) level


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor,
              logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats, elementwise (broadcasting).

    = ½ (log σ₂² − log σ₁² + (σ₁² + (μ₁ − μ₂)²)/σ₂² − 1)
    """
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor,
                                        log_scale: torch.Tensor) -> torch.Tensor:
    """log p(x) in nats, elementwise, for x on the 256 levels of an 8-bit image scaled to [−1, 1].

    DDPM eq. 13: the probability of x is the mass N(mean, e^{2·log_scale}) puts on x's bin
    [x − 1/255, x + 1/255]; the lowest bin reaches down to −∞ and the highest up to +∞, so the
    256 probabilities sum to one. Computed with log Φ (log_ndtr), stable far in either tail.
    """
    inv_scale = torch.exp(-log_scale)
    upper = (x - mean + _HALF_BIN) * inv_scale
    lower = (x - mean - _HALF_BIN) * inv_scale
    # Φ(b) − Φ(a) = Φ(−a) − Φ(−b): use the side where both values sit in the lower tail.
    flip = lower > 0
    b = torch.where(flip, -lower, upper)
    a = torch.where(flip, -upper, lower)
    log_b = torch.special.log_ndtr(b)
    log_a = torch.special.log_ndtr(a)
    # log(Φ(b) − Φ(a)) = log Φ(b) + log(1 − Φ(a)/Φ(b)); the clamp keeps a zero-width bin finite.
    log_mid = log_b + torch.log(-torch.expm1((log_a - log_b).clamp(max=-1e-12)))
    log_low = torch.special.log_ndtr(upper)  # x is the lowest level: P(X ≤ x + 1/255)
    log_high = torch.special.log_ndtr(-lower)  # x is the highest level: P(X ≥ x − 1/255)
    return torch.where(x < -_EDGE, log_low, torch.where(x > _EDGE, log_high, log_mid))


def learned_range_log_variance(model_v: torch.Tensor, log_beta: torch.Tensor,
                               log_beta_tilde: torch.Tensor) -> torch.Tensor:
    """log Σ_θ = v·log β_t + (1 − v)·log β̃_t with v = (model_v + 1)/2 (Improved DDPM eq. 15)."""
    frac = (model_v + 1.0) / 2.0
    return frac * log_beta + (1.0 - frac) * log_beta_tilde


def _table(values: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(values, dtype=np.float32)).to(device)


class VariationalBound:
    """L_t of a schedule, per example, in bits per dimension (see the module docstring)."""

    def __init__(self, schedule: Schedule, device: torch.device | str = "cpu") -> None:
        dev = torch.device(device)
        ab = np.asarray(schedule.alphas_cumprod, dtype=np.float64)
        self.T = schedule.T
        self.sqrt_recip_ab = _table(1.0 / np.sqrt(ab), dev)  # 1/√ᾱ_t
        self.sqrt_recipm1_ab = _table(np.sqrt(1.0 / ab - 1.0), dev)  # √(1/ᾱ_t − 1)
        self.coef1 = _table(schedule.posterior_mean_coef1, dev)  # μ̃_t = coef1·x_0 + coef2·x_t (eq. 7)
        self.coef2 = _table(schedule.posterior_mean_coef2, dev)
        self.log_beta = _table(np.log(schedule.betas), dev)
        # log β̃_t with β̃_1 = 0 replaced by β̃_2 (improved-diffusion's posterior_log_variance_clipped)
        self.log_beta_tilde = _table(schedule.posterior_log_variance_clipped, dev)

    def _at(self, table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return table[t - 1].view(-1, 1, 1, 1)

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ̃_t, log β̃_t) of q(x_{t−1} | x_t, x_0) (DDPM eqs. 6–7; log β̃ clipped at t = 1)."""
        mean = self._at(self.coef1, t) * x0 + self._at(self.coef2, t) * x_t
        return mean, self._at(self.log_beta_tilde, t).expand_as(x_t)

    def model_distribution(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                           model_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ_θ, log Σ_θ) of p_θ(x_{t−1} | x_t): μ_θ = μ̃_t(x_t, x̂_0) with x̂_0 from ε̂ (eq. 15 of DDPM),
        unclipped; log Σ_θ from the learned range (Improved DDPM eq. 15)."""
        x0_pred = self._at(self.sqrt_recip_ab, t) * x_t - self._at(self.sqrt_recipm1_ab, t) * eps
        mean = self._at(self.coef1, t) * x0_pred + self._at(self.coef2, t) * x_t
        log_var = learned_range_log_variance(model_v, self._at(self.log_beta, t), self._at(self.log_beta_tilde, t))
        return mean, log_var

    def terms(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
              model_v: torch.Tensor) -> torch.Tensor:
        """L_t per example [N], bits/dim: the KL for t > 1, −log p_θ(x_0 | x_1) at t = 1.

        The caller passes ε̂ detached (stop-gradient on the mean), so the gradient reaches only v.
        """
        true_mean, true_log_var = self.posterior(x0, x_t, t)
        mean, log_var = self.model_distribution(x_t, t, eps, model_v)
        kl = normal_kl(true_mean, true_log_var, mean, log_var).mean(dim=(1, 2, 3)) / _LN2
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var).mean(dim=(1, 2, 3)) / _LN2
        return torch.where(t == 1, nll, kl)


def hybrid_loss(output: torch.Tensor, eps: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                bound: VariationalBound | None,
                vlb_weight: float) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(L_simple per example, L_vlb estimate T·L_t per example or None, the objective to minimise).

    Without `bound` the output is ε̂ and the objective is L_simple = ‖ε − ε̂‖²/dim (DDPM eq. 14).
    With it the output is [ε̂, v] and the objective is L_hybrid = L_simple + λ·T·L_t, where L_t
    sees ε̂ detached: L_simple trains the mean, L_vlb only the variance (Improved DDPM §3.1).
    """
    output = output.float()
    vlb = None
    if bound is not None:
        output, v = output.chunk(2, dim=1)
        vlb = bound.T * bound.terms(x0, x_t, t, output.detach(), v)
    simple = (output - eps).pow(2).mean(dim=(1, 2, 3))
    objective = simple.mean() if vlb is None else simple.mean() + vlb_weight * vlb.mean()
    return simple, vlb, objective

"""Reverse-process samplers as pure step functions with one signature.

Every step function maps x_t (at timestep t) and the network's prediction at (x_t, t) to
the sample at an earlier timestep t_prev (0 means the clean image x_0):

    step(schedule, x_t, pred, t, t_prev, state, rng, options) -> StepResult

`pred` is a `prediction.Prediction`: x̂_0 and ε̂ (whatever the network predicts: ε, v or x_0;
`prediction.interpret_output` makes it) and, for a learned_range model, the variance fraction
that only the DDPM step uses. `state` carries what a multistep solver needs from earlier steps
(it is a frozen value, returned anew); `rng` is the only source of noise. Coefficients are
float64; arrays stay float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from diffusion_studio.core.forward import eps_from_x0, q_posterior
from diffusion_studio.core.params import DdpmVariance, SamplerKind, check_steps, parse_sampler
from diffusion_studio.core.prediction import Prediction, learned_log_variance
from diffusion_studio.core.schedule import Schedule, posterior
from diffusion_studio.errors import UsageError

__all__ = [
    "SamplerOptions",
    "SolverState",
    "StepResult",
    "StepFn",
    "make_timesteps",
    "clip_prediction",
    "ddpm_step",
    "ddim_step",
    "dpmpp_2m_step",
    "step_function",
]


@dataclass(frozen=True)
class SamplerOptions:
    """clip_x0: clip x̂_0 to [−clip_range, clip_range] (diffusers' clip_sample / clip_sample_range);
    eta: DDIM's η; ddpm_variance: the DDPM step's fixed σ_t² (a learned variance in the
    prediction takes its place)."""

    clip_x0: bool = True
    eta: float = 0.0
    ddpm_variance: DdpmVariance = DdpmVariance.BETA
    clip_range: float = 1.0


@dataclass(frozen=True)
class SolverState:
    """History for multistep solvers: the previous step's x̂_0 and its λ = log(√ᾱ/√(1−ᾱ))."""

    x0_prev: np.ndarray | None = None
    lambda_prev: float | None = None


@dataclass(frozen=True)
class StepResult:
    x_prev: np.ndarray   # the sample at t_prev (x_0 when t_prev = 0)
    x0_pred: np.ndarray  # x̂_0 used by this step (clipped when options.clip_x0)
    eps: np.ndarray      # ε consistent with x̂_0 (re-derived after clipping)
    state: SolverState


StepFn = Callable[
    [Schedule, np.ndarray, Prediction, int, int, SolverState, np.random.Generator, SamplerOptions],
    StepResult,
]


def make_timesteps(T: int, steps: int, t_start: int | None = None) -> np.ndarray:
    """`steps` timesteps evenly spaced over [1, t_start] (default T), descending, t_start first.

    int64 array; with steps == t_start it is t_start, t_start−1, …, 1.
    """
    t_start = T if t_start is None else t_start
    steps = check_steps(steps, T)
    if not 1 <= t_start <= T:
        raise UsageError(f"the starting timestep must lie in 1..{T}, got {t_start}.")
    if steps > t_start:
        raise UsageError(f"Steps must be at most the starting timestep {t_start}, got {steps}.")
    # Spacing (t_start − 1)/(steps − 1) ≥ 1, so rounding never merges two timesteps.
    ts = np.round(np.linspace(t_start, 1, int(steps))).astype(np.int64)
    return ts


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def clip_prediction(
    schedule: Schedule, x_t: np.ndarray, pred: Prediction, t: int, options: SamplerOptions
) -> tuple[np.ndarray, np.ndarray]:
    """The step's x̂_0 and ε̂, with x̂_0 clipped to [−clip_range, clip_range] when options.clip_x0.

    Returns (x0_pred, eps) as float32; clipping re-derives ε from the clipped x̂_0
    (`forward.eps_from_x0`) so that x_t = √ᾱ_t x̂_0 + √(1−ᾱ_t) ε still holds (as improved-diffusion
    does, and diffusers' DDIM with use_clipped_model_output).
    """
    x0, eps = pred.x0, pred.eps
    if options.clip_x0:
        x0 = np.clip(x0, -options.clip_range, options.clip_range)
        eps = eps_from_x0(schedule, x_t.astype(np.float64), t, x0)
    return np.asarray(x0, dtype=np.float32), np.asarray(eps, dtype=np.float32)


def ddpm_step(
    schedule: Schedule,
    x_t: np.ndarray,
    pred: Prediction,
    t: int,
    t_prev: int,
    state: SolverState,
    rng: np.random.Generator,
    options: SamplerOptions,
) -> StepResult:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), on any sub-sequence of timesteps.

    With a learned variance (pred.var_frac) σ_t² is Improved DDPM's Σ_θ (eq. 15) and
    options.ddpm_variance is not used.
    """
    # 1. x̂_0 (eq. 15 for ε-prediction), optionally clipped.
    x0, eps = clip_prediction(schedule, x_t, pred, t, options)
    # 2. posterior mean μ̃ and variance β̃ between t and t_prev (eqs. 6–7); with unclipped x̂_0 the
    #    mean equals Algorithm 2's 1/√α_t (x_t − β_t/√(1−ᾱ_t) ε).
    mean, var_tilde = q_posterior(schedule, x0.astype(np.float64), x_t.astype(np.float64), t, t_prev)
    # 3. x_{t−1} = μ̃ + σ_t z, σ_t² = β_t ("fixed large") or β̃_t ("fixed small") (§3.2), where on a
    #    sub-sequence β is the step's 1 − ᾱ_t/ᾱ_{t_prev}; no noise on the final step (z = 0 at t = 1).
    #    A learned_range model gives σ_t² = Σ_θ = exp(frac log β + (1 − frac) log β̃) (Improved DDPM eq. 15).
    if t_prev > 0:
        if pred.var_frac is not None:
            log_var = learned_log_variance(schedule.alpha_bar(t), schedule.alpha_bar(t_prev), pred.var_frac)
            sigma: np.ndarray | float = np.exp(0.5 * log_var)
        elif options.ddpm_variance is DdpmVariance.BETA:
            sigma = math.sqrt(float(posterior(schedule.alpha_bar(t), schedule.alpha_bar(t_prev)).beta))
        else:
            sigma = math.sqrt(float(var_tilde))
        mean = mean + sigma * _noise(rng, x_t.shape)
    return StepResult(mean.astype(np.float32), x0, eps, state)


def ddim_step(
    schedule: Schedule,
    x_t: np.ndarray,
    pred: Prediction,
    t: int,
    t_prev: int,
    state: SolverState,
    rng: np.random.Generator,
    options: SamplerOptions,
) -> StepResult:
    """DDIM (Song et al. 2021, eq. 12); η = 0 is deterministic, η = 1 is DDPM-like. Ignores a learned variance."""
    ab_prev = schedule.alpha_bar(t_prev)
    # 1. "predicted x_0" term of eq. 12.
    x0, eps = clip_prediction(schedule, x_t, pred, t, options)
    # 2. σ_t(η) = η √((1−ᾱ_{t−1})/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t−1}) = η √β̃  (eq. 16; β̃ on the sub-sequence).
    sigma = options.eta * math.sqrt(float(posterior(schedule.alpha_bar(t), ab_prev).variance))
    # 3. "direction pointing to x_t": √(1 − ᾱ_{t−1} − σ_t²) ε.
    direction = math.sqrt(max(1.0 - ab_prev - sigma**2, 0.0))
    x_prev = math.sqrt(ab_prev) * x0.astype(np.float64) + direction * eps.astype(np.float64)
    # 4. random noise σ_t z.
    if sigma > 0.0:
        x_prev = x_prev + sigma * _noise(rng, x_t.shape)
    return StepResult(x_prev.astype(np.float32), x0, eps, state)


def _lambda(ab: float) -> float:
    """Half log-SNR λ = log(α/σ) with α = √ᾱ, σ = √(1 − ᾱ)  (Lu et al. 2022, §2)."""
    return 0.5 * (math.log(ab) - math.log1p(-ab))


def dpmpp_2m_step(
    schedule: Schedule,
    x_t: np.ndarray,
    pred: Prediction,
    t: int,
    t_prev: int,
    state: SolverState,
    rng: np.random.Generator,
    options: SamplerOptions,
) -> StepResult:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): multistep, data prediction, deterministic.

    Ignores a learned variance.
    """
    # 1. data prediction x_θ(x_t, t) = x̂_0.
    x0, eps = clip_prediction(schedule, x_t, pred, t, options)
    ab_t, ab_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    lam_t = _lambda(ab_t)
    new_state = SolverState(x0_prev=x0, lambda_prev=lam_t)
    # 2. the last step lands on t = 0 where σ = 0 and λ = ∞: the first-order update is x̂_0 itself.
    if t_prev == 0:
        return StepResult(x0.copy(), x0, eps, new_state)
    alpha_prev, sigma_t, sigma_prev = math.sqrt(ab_prev), math.sqrt(1.0 - ab_t), math.sqrt(1.0 - ab_prev)
    h = _lambda(ab_prev) - lam_t
    # 3. second order when a previous x̂_0 exists: D = (1 + 1/(2r)) x̂_0 − 1/(2r) x̂_0^{prev},
    #    r = h_{i−1}/h_i. First order (D = x̂_0, the DDIM step) on the first step and on the
    #    final jump into t = 1: time-uniform steps make that jump span most of the λ range
    #    (r ≪ 1), where the second-order extrapolation overshoots (diffusers' lower_order_final).
    d = x0.astype(np.float64)
    if state.x0_prev is not None and state.lambda_prev is not None and t_prev > 1:
        r = (lam_t - state.lambda_prev) / h
        d = (1.0 + 0.5 / r) * d - (0.5 / r) * state.x0_prev.astype(np.float64)
    # 4. x_{t_prev} = (σ_prev/σ_t) x_t − α_prev (e^{−h} − 1) D.
    x_prev = (sigma_prev / sigma_t) * x_t.astype(np.float64) - alpha_prev * math.expm1(-h) * d
    return StepResult(x_prev.astype(np.float32), x0, eps, new_state)


_STEP_FUNCTIONS: dict[SamplerKind, StepFn] = {
    SamplerKind.DDPM: ddpm_step,
    SamplerKind.DDIM: ddim_step,
    SamplerKind.DPMPP_2M: dpmpp_2m_step,
}


def step_function(sampler: str | SamplerKind) -> StepFn:
    """The step function for a sampler name (UsageError for unknown names)."""
    return _STEP_FUNCTIONS[parse_sampler(sampler)]

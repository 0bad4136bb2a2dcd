"""What the network predicts, and how its raw output becomes x̂_0, ε̂ and (optionally) a learned variance.

A denoiser's raw output has C channels (the prediction) or, with a learned variance, 2C
(the prediction, then the variance interpolation v). Everything here is float64 math on
float32 arrays; `t` is the paper's timestep (1 … T), an int or an int array of shape [N].

- ε-prediction (DDPM eq. 11): the output is ε̂; x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t (eq. 15).
- v-prediction (Salimans & Ho 2022, §4 / eq. 11 there): v = √ᾱ_t ε − √(1−ᾱ_t) x_0, so
  x̂_0 = √ᾱ_t x_t − √(1−ᾱ_t) v̂ and ε̂ = √(1−ᾱ_t) x_t + √ᾱ_t v̂.
- x_0-prediction ("sample"): the output is x̂_0; ε̂ = (x_t − √ᾱ_t x̂_0)/√(1−ᾱ_t).
- learned range (Improved DDPM eq. 15): log Σ_θ = frac · log β_t + (1 − frac) · log β̃_t with
  frac = (v + 1)/2 from the network's second half of channels; on a sub-sequence of timesteps
  β_t and β̃_t are the step's (`schedule.posterior`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

from diffusion_studio.core.forward import coefficient, eps_from_x0, x0_from_eps
from diffusion_studio.core.schedule import Schedule, posterior
from diffusion_studio.errors import UsageError

__all__ = [
    "MIN_VARIANCE",
    "Prediction",
    "PredictionKind",
    "VarianceKind",
    "interpret_output",
    "learned_log_variance",
    "output_channels",
    "parse_prediction_kind",
    "parse_variance_kind",
    "split_learned_range",
    "v_from_x0_eps",
    "x0_eps_from_v",
]

# β̃ of a step that lands on x_0 is 0; its log is taken of max(β̃, MIN_VARIANCE) as diffusers does
# (DDPMScheduler._get_variance). That step adds no noise, so the value never reaches a sample.
MIN_VARIANCE = 1e-20


class PredictionKind(str, Enum):
    """What the network's (first C) output channels are; the values are diffusers' `prediction_type`."""

    EPSILON = "epsilon"            # ε̂ (DDPM)
    V_PREDICTION = "v_prediction"  # v̂ = √ᾱ ε − √(1−ᾱ) x_0 (Salimans & Ho 2022)
    SAMPLE = "sample"              # x̂_0


class VarianceKind(str, Enum):
    """The reverse-process variance the model was trained with; values are diffusers' `variance_type`."""

    FIXED_LARGE = "fixed_large"      # σ_t² = β_t (DDPM §3.2)
    FIXED_SMALL = "fixed_small"      # σ_t² = β̃_t
    LEARNED_RANGE = "learned_range"  # Σ_θ interpolated between β̃_t and β_t (Improved DDPM eq. 15); 2C outputs


def _parse(enum: type[PredictionKind] | type[VarianceKind], what: str, name: object) -> str:
    if isinstance(name, enum):
        return str(name.value)
    if isinstance(name, str):
        key = name.strip().lower().replace("-", "_")
        for kind in enum:
            if key == kind.value:
                return str(kind.value)
    choices = ", ".join(k.value for k in enum)
    raise UsageError(f"Unknown {what} {name!r}; choose one of {choices}.")


def parse_prediction_kind(name: object) -> PredictionKind:
    """'epsilon' | 'v_prediction' | 'sample' (case and '-' for '_' forgiven) -> PredictionKind, else UsageError."""
    return PredictionKind(_parse(PredictionKind, "prediction type", name))


def parse_variance_kind(name: object) -> VarianceKind:
    """'fixed_large' | 'fixed_small' | 'learned_range' -> VarianceKind, else UsageError."""
    return VarianceKind(_parse(VarianceKind, "variance type", name))


def output_channels(channels: int, variance: VarianceKind) -> int:
    """Channels of the raw network output for images with `channels` channels: C, or 2C with learned_range."""
    return 2 * channels if variance is VarianceKind.LEARNED_RANGE else channels


@dataclass(frozen=True)
class Prediction:
    """The network's output at (x_t, t), interpreted.

    x0: x̂_0 (unclipped) and eps: ε̂, consistent with eq. 4 (x_t = √ᾱ_t x̂_0 + √(1−ᾱ_t) ε̂);
    var_frac: with learned_range the interpolation weight frac = (v + 1)/2 of Improved DDPM
    eq. 15 (nominally in [0, 1]; not clamped, as in improved-diffusion and diffusers), else None.
    """

    x0: np.ndarray
    eps: np.ndarray
    var_frac: np.ndarray | None = None


def _alphas(schedule: Schedule, t: int | np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """(√ᾱ_t, √(1−ᾱ_t)) as float64, broadcastable against an array with `ndim` dims."""
    t_arr = np.asarray(t)
    if not np.issubdtype(t_arr.dtype, np.integer) or (t_arr.size and (t_arr.min() < 1 or t_arr.max() > schedule.T)):
        raise UsageError(f"timesteps must be integers in 1..{schedule.T}, got {t!r}.")
    return (
        coefficient(schedule.sqrt_alphas_cumprod, t_arr, ndim),
        coefficient(schedule.sqrt_one_minus_alphas_cumprod, t_arr, ndim),
    )


def v_from_x0_eps(schedule: Schedule, x_0: np.ndarray, t: int | np.ndarray, eps: np.ndarray) -> np.ndarray:
    """The v-prediction target v = √ᾱ_t ε − √(1−ᾱ_t) x_0 (Salimans & Ho 2022), float64."""
    a, b = _alphas(schedule, t, np.ndim(x_0))
    v: np.ndarray = a * np.asarray(eps, np.float64) - b * np.asarray(x_0, np.float64)
    return v


def x0_eps_from_v(
    schedule: Schedule, x_t: np.ndarray, t: int | np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Invert v with x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε: x̂_0 = √ᾱ_t x_t − √(1−ᾱ_t) v, ε̂ = √(1−ᾱ_t) x_t + √ᾱ_t v.

    (The pair is a rotation of (x_0, ε) by the angle φ with cos φ = √ᾱ_t; Salimans & Ho 2022, §4.)
    """
    a, b = _alphas(schedule, t, np.ndim(x_t))
    x_t64, v64 = np.asarray(x_t, np.float64), np.asarray(v, np.float64)
    x0: np.ndarray = a * x_t64 - b * v64
    eps: np.ndarray = b * x_t64 + a * v64
    return x0, eps


def split_learned_range(output: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a [N, 2C, …] learned_range output into (prediction [N, C, …], v [N, C, …])."""
    if output.ndim < 2 or output.shape[1] != 2 * channels:
        raise UsageError(
            f"a learned_range model must output 2 x {channels} channels (prediction, then variance), "
            f"got shape {output.shape}."
        )
    return output[:, :channels], output[:, channels:]


def interpret_output(
    schedule: Schedule,
    x_t: np.ndarray,
    output: np.ndarray,
    t: int | np.ndarray,
    prediction: PredictionKind = PredictionKind.EPSILON,
    variance: VarianceKind = VarianceKind.FIXED_LARGE,
) -> Prediction:
    """Turn the raw network output at (x_t, t) into x̂_0, ε̂ and, with learned_range, frac.

    x_t is [N, C, …]; the output must be [N, C, …] (or [N, 2C, …] with learned_range), else
    UsageError. For ε-prediction ε̂ is the output itself (same dtype) and x̂_0 follows from eq. 15
    in float64, exactly as the samplers computed it before other kinds existed.
    """
    output = np.asarray(output)
    var_frac: np.ndarray | None = None
    if variance is VarianceKind.LEARNED_RANGE:
        output, v = split_learned_range(output, x_t.shape[1])
        var_frac = (np.asarray(v, np.float64) + 1.0) / 2.0  # Improved DDPM §3.1: v ∈ [−1, 1] -> [0, 1]
    if output.shape != x_t.shape:
        raise UsageError(f"the denoiser returned an output of shape {output.shape} for x of shape {x_t.shape}.")
    x_t64 = np.asarray(x_t, np.float64)
    if prediction is PredictionKind.EPSILON:
        eps = output
        x0 = x0_from_eps(schedule, x_t64, t, eps)  # eq. 15
    elif prediction is PredictionKind.V_PREDICTION:
        x0, eps = x0_eps_from_v(schedule, x_t64, t, output)
    else:
        x0 = np.asarray(output, np.float64)
        eps = eps_from_x0(schedule, x_t64, t, x0)  # eq. 4 solved for ε
    return Prediction(x0=x0, eps=eps, var_frac=var_frac)


def learned_log_variance(
    alpha_bar_t: float, alpha_bar_prev: float, var_frac: npt.ArrayLike
) -> np.ndarray:
    """log Σ_θ = frac · log β + (1 − frac) · log β̃  (Improved DDPM eq. 15), float64.

    β = 1 − ᾱ_t/ᾱ_prev and β̃ = (1 − ᾱ_prev)/(1 − ᾱ_t) · β are the step's (`schedule.posterior`),
    so it holds on any sub-sequence of timesteps; log β̃ uses max(β̃, MIN_VARIANCE) as diffusers does.
    """
    post = posterior(alpha_bar_t, alpha_bar_prev)
    max_log = np.log(post.beta)
    min_log = np.log(np.maximum(post.variance, MIN_VARIANCE))
    frac = np.asarray(var_frac, np.float64)
    log_var: np.ndarray = frac * max_log + (1.0 - frac) * min_log
    return log_var

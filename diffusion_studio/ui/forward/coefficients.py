"""Every DDPM quantity at one timestep t, as numbers and as the formulas the Forward tab shows.

Headless (numpy only); the values come straight from the float64 `core.schedule.Schedule`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffusion_studio.core.schedule import Schedule
from diffusion_studio.errors import UsageError


@dataclass(frozen=True)
class Coefficients:
    """Every schedule quantity at one timestep t (float64, straight from the Schedule)."""

    t: int
    T: int
    beta: float  # β_t
    alpha: float  # α_t = 1 − β_t
    alpha_bar: float  # ᾱ_t = ∏_{i≤t} α_i
    alpha_bar_prev: float  # ᾱ_{t−1}
    sqrt_alpha_bar: float  # √ᾱ_t
    sqrt_one_minus_alpha_bar: float  # √(1 − ᾱ_t)
    snr: float  # ᾱ_t / (1 − ᾱ_t)
    beta_tilde: float  # β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t  (DDPM eq. 7)

    @classmethod
    def at(cls, schedule: Schedule, t: int) -> Coefficients:
        if not 1 <= t <= schedule.T:
            raise UsageError(f"t must lie in 1..{schedule.T}, got {t}.")
        i = t - 1
        return cls(
            t=t,
            T=schedule.T,
            beta=float(schedule.betas[i]),
            alpha=float(schedule.alphas[i]),
            alpha_bar=float(schedule.alphas_cumprod[i]),
            alpha_bar_prev=float(schedule.alphas_cumprod_prev[i]),
            sqrt_alpha_bar=float(schedule.sqrt_alphas_cumprod[i]),
            sqrt_one_minus_alpha_bar=float(schedule.sqrt_one_minus_alphas_cumprod[i]),
            snr=float(schedule.snr[i]),
            beta_tilde=float(schedule.posterior_variance[i]),
        )


def format_value(value: float) -> str:
    """Seven significant digits, plain ASCII (so the text parses back with float())."""
    return f"{value:.7g}"


def coefficient_rows(c: Coefficients) -> list[tuple[str, str, str, str]]:
    """(key, symbol as HTML, value text, meaning) for every coefficient shown on screen."""
    return [
        ("beta", "β<sub>t</sub>", format_value(c.beta), "noise added by step t"),
        ("alpha", "α<sub>t</sub> = 1 − β<sub>t</sub>", format_value(c.alpha), "signal kept by step t"),
        ("alpha_bar", "ᾱ<sub>t</sub> = ∏ α<sub>i</sub>", format_value(c.alpha_bar), "signal variance left"),
        ("sqrt_alpha_bar", "√ᾱ<sub>t</sub>", format_value(c.sqrt_alpha_bar), "weight of x<sub>0</sub>"),
        ("sqrt_one_minus_alpha_bar", "√(1 − ᾱ<sub>t</sub>)", format_value(c.sqrt_one_minus_alpha_bar),
         "weight of ε"),
        ("snr", "SNR = ᾱ<sub>t</sub> / (1 − ᾱ<sub>t</sub>)", format_value(c.snr), "signal-to-noise ratio"),
        ("beta_tilde", "β̃<sub>t</sub> = (1 − ᾱ<sub>t−1</sub>)/(1 − ᾱ<sub>t</sub>) β<sub>t</sub>",
         format_value(c.beta_tilde), "posterior variance"),
    ]


def formula_html(c: Coefficients) -> str:
    """The closed form with the numbers of this t substituted (DDPM eq. 4)."""
    return (
        f"x<sub>t</sub> = √ᾱ<sub>t</sub> x<sub>0</sub> + √(1 − ᾱ<sub>t</sub>) ε"
        f" = {c.sqrt_alpha_bar:.4f} · x<sub>0</sub> + {c.sqrt_one_minus_alpha_bar:.4f} · ε"
        f"&nbsp;&nbsp;&nbsp;(t = {c.t} of {c.T})"
    )


def markov_html(c: Coefficients) -> str:
    """One Markov step q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I) with this t's numbers (eq. 2)."""
    return (
        f"q(x<sub>t</sub> | x<sub>t−1</sub>) = N(√(1 − β<sub>t</sub>) x<sub>t−1</sub>, β<sub>t</sub> I)"
        f" = N({math.sqrt(c.alpha):.4f} · x<sub>t−1</sub>, {c.beta:.4g} · I)"
    )


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays over all their elements (0 if one is constant)."""
    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denom if denom > 0 else 0.0

"""Samplers driven by the exact ε* of Gaussian data reproduce the data distribution.

Data x_0 ~ N(μ, diag(s²)). With x_t = √ᾱ x_0 + √(1−ᾱ) ε, the pair (ε, x_t) is jointly
Gaussian with Cov(ε, x_t) = √(1−ᾱ) and Var(x_t) = ᾱ s² + 1 − ᾱ, so the MMSE ε-prediction is

    ε*(x_t, t) = E[ε | x_t] = √(1−ᾱ_t) (x_t − √ᾱ_t μ) / (ᾱ_t s² + 1 − ᾱ_t),

and equivalently E[x_0 | x_t] = μ + √ᾱ_t s² (x_t − √ᾱ_t μ) / (ᾱ_t s² + 1 − ᾱ_t).

Tolerances. With n samples a sample mean has standard error s/√n and a sample variance
s²·√(2/n); every check allows 5 standard errors (false alarm < 1e-6 per check). On top:

- DDPM with 1000 steps (Algorithm 2) is affine in x_t plus independent noise, so its output
  is exactly Gaussian too, N(c, v), with (c, v) pushed through Algorithm 2 below. The samples
  must match (c, v) within 5 SE; v is off the data's s² by at most 0.3% with σ_t² = β_t and by
  0.9–1.6% with σ_t² = β̃_t (the smaller s, the more), so 2% is allowed against the data.
- DDIM (η = 0) and DPM-Solver++(2M) are deterministic. For Gaussian data every update is
  affine in x_t, so the output is exactly N(c, k²) for x_T ~ N(0, 1), with (k, c) obtained
  by pushing an affine function through the paper's update formulas below (written here
  independently of the library). The samples must match (c, k²) within 5 SE, and (c, k²)
  must match the data within the solver's discretisation error at this step count: time-
  uniform steps shrink the variance by 7–11% for DDIM-50 and 0–9% for DPM-Solver++-20 at
  these s (the smaller s, the more); bounds of 13% and 11% are asserted, and more steps
  converge to the data (see the convergence test).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion_studio.core.sampler_steps import make_timesteps
from diffusion_studio.core.sampling_loop import run_to_end, sample
from diffusion_studio.core.schedule import Schedule, make_schedule

N = 8000
MU = np.array([0.3, -0.4, 0.1, 0.0, 0.5, -0.2]).reshape(1, 3, 1, 2)
S = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 1.0]).reshape(1, 3, 1, 2)
SHAPE = (N, 3, 1, 2)


@pytest.fixture(scope="module")
def schedule() -> Schedule:
    return make_schedule("linear", 1000)


def oracle(schedule: Schedule):
    def eps_fn(x_t: np.ndarray, t: np.ndarray) -> np.ndarray:
        ab = schedule.alphas_cumprod[t - 1][:, None, None, None]
        return ((x_t - np.sqrt(ab) * MU) * np.sqrt(1 - ab) / (ab * S**2 + 1 - ab)).astype(np.float32)

    return eps_fn


def run(schedule: Schedule, sampler: str, steps: int, seed: int = 0, **kw) -> np.ndarray:
    last = run_to_end(sample(oracle(schedule), schedule, SHAPE, sampler=sampler, steps=steps,
                             rng=np.random.default_rng(seed), clip_x0=False, **kw))
    assert last.index == steps - 1 and last.t_prev == 0
    return last.x_prev.astype(np.float64)


def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0, keepdims=True), x.var(axis=0, keepdims=True)


def assert_matches(x: np.ndarray, mean: np.ndarray, var: np.ndarray, var_bias: float = 0.0) -> None:
    m, v = stats(x)
    np.testing.assert_array_less(np.abs(m - mean), 5 * np.sqrt(var / N) + 0.01 * S)
    np.testing.assert_array_less(np.abs(v / var - 1), 5 * math.sqrt(2 / N) + var_bias)


# --- analytic output distribution of DDPM (affine in x_t plus independent noise) --------------

def analytic_ddpm(schedule: Schedule, variance: str) -> tuple[np.ndarray, np.ndarray]:
    """(c, v) of x_0 ~ N(c, v): Algorithm 2, x_{t−1} = (x_t − β_t/√(1−ᾱ_t) ε*)/√α_t + σ_t z, all T steps."""
    c, v = np.zeros_like(S), np.ones_like(S)  # x_T ~ N(0, 1)
    for t in range(schedule.T, 0, -1):
        ab, beta = float(schedule.alphas_cumprod[t - 1]), float(schedule.betas[t - 1])
        ab_prev = 1.0 if t == 1 else float(schedule.alphas_cumprod[t - 2])
        d = ab * S**2 + 1 - ab  # ε* = e_k x_t + e_c  (module docstring)
        e_k, e_c = math.sqrt(1 - ab) / d, -math.sqrt(1 - ab) * math.sqrt(ab) * MU / d
        k = (1 - beta / math.sqrt(1 - ab) * e_k) / math.sqrt(1 - beta)
        shift = -beta / math.sqrt(1 - ab) * e_c / math.sqrt(1 - beta)
        sigma2 = 0.0 if t == 1 else beta if variance == "beta" else beta * (1 - ab_prev) / (1 - ab)
        c, v = k * c + shift, k * k * v + sigma2
    return c, v


# --- analytic output distribution of the deterministic samplers (affine maps of x_T) -----------
# An affine function of x_T is the pair (k, c): x = k·x_T + c.

def _ab(schedule: Schedule, t: int) -> float:
    return 1.0 if t == 0 else float(schedule.alphas_cumprod[t - 1])


def _x0(schedule: Schedule, t: int, k: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ab = _ab(schedule, t)
    g = math.sqrt(ab) * S**2 / (ab * S**2 + 1 - ab)  # E[x_0 | x_t] = μ + g (x_t − √ᾱ μ)
    return g * k, g * (c - math.sqrt(ab) * MU) + MU


def analytic(schedule: Schedule, sampler: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    ts = [int(t) for t in make_timesteps(schedule.T, steps)] + [0]
    k, c = np.ones_like(S), np.zeros_like(S)
    prev = None  # (x0 pair, λ) of the previous step, for DPM-Solver++(2M)
    for t, tp in zip(ts[:-1], ts[1:]):
        ab, abp = _ab(schedule, t), _ab(schedule, tp)
        xk, xc = _x0(schedule, t, k, c)
        if sampler == "ddim":  # DDIM eq. 12, η = 0: x' = √ᾱ' x̂0 + √(1−ᾱ') (x − √ᾱ x̂0)/√(1−ᾱ)
            r = math.sqrt(1 - abp) / math.sqrt(1 - ab)
            k = math.sqrt(abp) * xk + r * (k - math.sqrt(ab) * xk)
            c = math.sqrt(abp) * xc + r * (c - math.sqrt(ab) * xc)
            continue
        lam = 0.5 * math.log(ab / (1 - ab))
        if tp == 0:  # σ' = 0: the update is x̂0
            k, c = xk, xc
            break
        h = 0.5 * math.log(abp / (1 - abp)) - lam
        dk, dc = xk, xc
        if prev is not None and tp > 1:  # Lu et al. 2022, Alg. 2: D = (1 + 1/2r) x̂0 − 1/2r x̂0_prev
            (pk, pc), lam_prev = prev
            r = (lam - lam_prev) / h
            dk, dc = (1 + 0.5 / r) * xk - 0.5 / r * pk, (1 + 0.5 / r) * xc - 0.5 / r * pc
        prev = ((xk, xc), lam)
        a = math.sqrt(1 - abp) / math.sqrt(1 - ab)
        b = -math.sqrt(abp) * math.expm1(-h)
        k, c = a * k + b * dk, a * c + b * dc
    return c, k**2


@pytest.mark.parametrize(("variance", "bias_lo", "bias_hi"), [("beta", -0.001, 0.004), ("beta-tilde", -0.017, -0.008)])
def test_ddpm_1000_steps_reproduces_the_data(schedule, variance: str, bias_lo: float, bias_hi: float) -> None:
    mean, var = analytic_ddpm(schedule, variance)
    x = run(schedule, "ddpm", 1000, ddpm_variance=variance)
    assert_matches(x, mean, var)  # the implementation: sample statistics equal the exact N(c, v)
    np.testing.assert_allclose(mean, MU, atol=1e-4)  # the sampler: close to the data distribution
    assert np.all(var / S**2 - 1 > bias_lo) and np.all(var / S**2 - 1 < bias_hi)
    assert_matches(x, MU, S**2, var_bias=0.02)


@pytest.mark.parametrize("sampler,steps,max_shrink", [("ddim", 50, 0.13), ("dpmpp-2m", 20, 0.11)])
def test_deterministic_samplers_match_their_exact_output_and_the_data(schedule, sampler, steps, max_shrink) -> None:
    mean, var = analytic(schedule, sampler, steps)
    x = run(schedule, sampler, steps)
    assert_matches(x, mean, var)  # the implementation: sample statistics equal the exact N(c, k²)
    np.testing.assert_allclose(mean, MU, atol=0.01)  # the solver: close to the data distribution
    assert np.all(var / S**2 > 1 - max_shrink) and np.all(var / S**2 < 1.02)
    assert_matches(x, MU, S**2, var_bias=max_shrink)


def test_more_steps_converge(schedule) -> None:
    for sampler, steps in [("ddim", 500), ("dpmpp-2m", 100)]:
        _, var = analytic(schedule, sampler, steps)
        assert np.all(np.abs(var / S**2 - 1) < 0.02), sampler
        assert_matches(run(schedule, sampler, steps, seed=1), MU, S**2, var_bias=0.02)


def test_cosine_schedule_ddim(schedule) -> None:
    cos = make_schedule("cosine", 1000)
    mean, var = analytic(cos, "ddim", 50)
    assert_matches(run(cos, "ddim", 50, seed=2), mean, var)
    assert np.all(np.abs(var / S**2 - 1) < 0.08)

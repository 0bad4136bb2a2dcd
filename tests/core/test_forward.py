import math

import numpy as np
import pytest

from diffusion_studio.core.forward import eps_from_x0, q_posterior, q_sample, q_step, x0_from_eps
from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.errors import UsageError

N = 20_000  # draws per statistic; 5 standard errors is a 1-in-1.7-million false alarm per check


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", 1000)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


def _assert_gaussian(samples: np.ndarray, mean: np.ndarray, var: float) -> None:
    """Column-wise mean and variance within 5 SE, and Kolmogorov distance below the 0.1% critical value."""
    n = samples.shape[0]
    np.testing.assert_allclose(samples.mean(axis=0), mean, atol=5 * math.sqrt(var / n))
    np.testing.assert_allclose(samples.var(axis=0), var, atol=5 * var * math.sqrt(2.0 / n))
    z = np.sort((samples[:, 0] - mean[0]) / math.sqrt(var))
    ecdf = np.arange(1, n + 1) / n
    assert np.max(np.abs(ecdf - _normal_cdf(z))) < 1.95 / math.sqrt(n)


@pytest.mark.parametrize("t", [1, 10, 300, 1000])
def test_q_sample_matches_closed_form_distribution(schedule, t: int) -> None:
    rng = np.random.default_rng(t)
    x_0 = np.array([0.9, -0.5, 0.0, 0.3], dtype=np.float32)
    eps = rng.standard_normal((N, 4), dtype=np.float32)
    x_t = q_sample(schedule, np.broadcast_to(x_0, (N, 4)), t, eps)
    assert x_t.dtype == np.float32 and x_t.shape == (N, 4)
    ab = schedule.alphas_cumprod[t - 1]
    _assert_gaussian(x_t.astype(np.float64), math.sqrt(ab) * x_0.astype(np.float64), 1.0 - ab)


def test_q_sample_per_sample_timesteps(schedule) -> None:
    x_0 = np.ones((3, 2, 2, 2), np.float32)
    eps = np.zeros_like(x_0)
    t = np.array([1, 500, 1000])
    x_t = q_sample(schedule, x_0, t, eps)
    np.testing.assert_allclose(x_t[:, 0, 0, 0], schedule.sqrt_alphas_cumprod[t - 1], rtol=1e-6)


@pytest.mark.parametrize("t", [1, 40, 200])
def test_markov_steps_match_closed_form_in_distribution(schedule, t: int) -> None:
    rng = np.random.default_rng(100 + t)
    x_0 = np.array([0.8, -0.6], dtype=np.float64)
    x = np.broadcast_to(x_0, (N, 2)).copy()
    for s in range(1, t + 1):
        x = q_step(schedule, x, s, rng.standard_normal((N, 2)))
    ab = schedule.alphas_cumprod[t - 1]
    _assert_gaussian(x, math.sqrt(ab) * x_0, 1.0 - ab)


def test_posterior_mean_identity_with_x0_through_eps(schedule) -> None:
    """μ̃_t(x_t, x_0(ε)) = 1/√α_t (x_t − β_t/√(1−ᾱ_t) ε) for every t (DDPM eq. 11)."""
    rng = np.random.default_rng(7)
    t = np.arange(1, 1001)
    x_t = rng.standard_normal((1000, 3, 4, 4))
    eps = rng.standard_normal((1000, 3, 4, 4))
    x_0 = x0_from_eps(schedule, x_t, t, eps)
    mean, var = q_posterior(schedule, x_0, x_t, t)
    c = (slice(None), None, None, None)
    expected = (x_t - (schedule.betas[t - 1] / schedule.sqrt_one_minus_alphas_cumprod[t - 1])[c] * eps) / np.sqrt(
        schedule.alphas[t - 1]
    )[c]
    np.testing.assert_allclose(mean, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(var[:, 0, 0, 0], schedule.posterior_variance)


@pytest.mark.parametrize(("t", "t_prev"), [(1000, 950), (500, 1), (37, 36), (20, 0), (1, 0)])
def test_posterior_on_a_sub_sequence_is_the_gaussian_conditional(schedule, t: int, t_prev: int) -> None:
    """q(x_s | x_t, x_0) from Bayes' rule on q(x_t | x_s) = N(√(ᾱ_t/ᾱ_s) x_s, 1 − ᾱ_t/ᾱ_s) and
    q(x_s | x_0) = N(√ᾱ_s x_0, 1 − ᾱ_s): the product of the two Gaussians in x_s."""
    rng = np.random.default_rng(11)
    x_0, x_t = rng.standard_normal((2, 5, 3))
    ab_t = schedule.alphas_cumprod[t - 1]
    ab_s = 1.0 if t_prev == 0 else schedule.alphas_cumprod[t_prev - 1]
    a, beta = math.sqrt(ab_t / ab_s), 1.0 - ab_t / ab_s
    var = 1.0 / (1.0 / (1.0 - ab_s) + a * a / beta) if t_prev > 0 else 0.0
    mean = var * (math.sqrt(ab_s) * x_0 / (1.0 - ab_s) + a * x_t / beta) if t_prev > 0 else x_0
    got_mean, got_var = q_posterior(schedule, x_0, x_t, t, t_prev)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-9, atol=1e-12)
    assert float(got_var) == pytest.approx(var, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("t_prev", [5, 7, -1, 2.0])
def test_posterior_needs_an_earlier_integer_t_prev(schedule, t_prev) -> None:
    x = np.zeros((1, 2))
    with pytest.raises(UsageError, match="0 <= t_prev < t"):
        q_posterior(schedule, x, x, 5, t_prev)


def test_x0_and_eps_conversions_invert_each_other(schedule) -> None:
    rng = np.random.default_rng(3)
    x_0 = rng.uniform(-1, 1, (4, 3, 2, 2))
    eps = rng.standard_normal((4, 3, 2, 2))
    t = np.array([1, 20, 600, 999])
    x_t = q_sample(schedule, x_0, t, eps)
    np.testing.assert_allclose(x0_from_eps(schedule, x_t, t, eps), x_0, atol=1e-9)
    np.testing.assert_allclose(eps_from_x0(schedule, x_t, t, x_0), eps, atol=1e-9)


def test_bad_forward_arguments(schedule) -> None:
    x = np.zeros((2, 3), np.float32)
    for t in (0, 1001, np.array([1, 1001]), 2.0):
        with pytest.raises(UsageError):
            q_sample(schedule, x, t, x)
    with pytest.raises(UsageError, match="same shape"):
        q_sample(schedule, x, 5, np.zeros((2, 4), np.float32))
    with pytest.raises(UsageError, match="same shape"):
        q_step(schedule, x, 5, np.zeros((3, 3), np.float32))

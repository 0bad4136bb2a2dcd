"""core.posterior_compare: q(x_{t−1} | x_t, x_0) against p_θ(x_{t−1} | x_t), checked against DDPM eqs. 6, 7 and 11
written out by hand from the linear β schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion_studio.core.forward import q_sample, x0_from_eps
from diffusion_studio.core.posterior_compare import compare_posteriors, gaussian_kl_per_dim
from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.errors import UsageError

SHAPE = (3, 4, 4)


def _by_hand(t: int) -> tuple[float, float, float, float, float]:
    """(β_t, α_t, ᾱ_t, ᾱ_{t−1}, β̃_t) of DDPM's linear schedule, T = 1000, from the paper's definitions."""
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    alpha_bar = 1.0
    for beta in betas[: t - 1]:
        alpha_bar *= 1.0 - beta
    ab_prev, beta = alpha_bar, betas[t - 1]
    ab_t = ab_prev * (1.0 - beta)
    return beta, 1.0 - beta, ab_t, ab_prev, (1.0 - ab_prev) / (1.0 - ab_t) * beta


@pytest.mark.parametrize("t", [2, 10, 250, 999, 1000])
def test_mean_and_variance_are_ddpm_eq_7_for_a_known_x0(t: int) -> None:
    schedule = make_schedule("linear", 1000)
    x_0 = np.full(SHAPE, 0.5, np.float32)
    x_0[0] = -1.0  # a known image: red channel −1, the rest 0.5
    eps = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    x_t = q_sample(schedule, x_0, t, eps)
    x0_pred = np.zeros(SHAPE, np.float32)  # a model that always answers "grey"
    z = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    c = compare_posteriors(schedule, x_0, x_t, x0_pred, t, z, "beta-tilde")

    beta, alpha, ab_t, ab_prev, beta_tilde = _by_hand(t)
    c1 = math.sqrt(ab_prev) * beta / (1.0 - ab_t)  # eq. 7
    c2 = math.sqrt(alpha) * (1.0 - ab_prev) / (1.0 - ab_t)
    assert c.coef_x0 == pytest.approx(c1, rel=1e-6)
    assert c.coef_xt == pytest.approx(c2, rel=1e-6)
    assert c.beta_tilde == pytest.approx(beta_tilde, rel=1e-6)
    assert c.beta == pytest.approx(beta, rel=1e-9)
    assert c.sigma2 == pytest.approx(beta_tilde, rel=1e-6)
    x_t64 = x_t.astype(np.float64)
    np.testing.assert_allclose(c.mean_q, c1 * x_0 + c2 * x_t64, atol=1e-6)  # μ̃_t(x_t, x_0)
    np.testing.assert_allclose(c.mean_p, c2 * x_t64, atol=1e-6)  # μ_θ with x̂_0 = 0
    # one z for both: the samples differ from their means by √β̃ z and σ z
    np.testing.assert_allclose(c.sample_q - c.mean_q, math.sqrt(beta_tilde) * z, atol=1e-6)
    np.testing.assert_allclose(c.sample_p - c.mean_p, math.sqrt(beta_tilde) * z, atol=1e-6)
    # μ̃ − μ_θ = c₁ (x_0 − x̂_0), so ‖μ̃ − μ_θ‖² = c₁² ‖x_0‖²; the variances agree, so KL = ‖·‖²/(2β̃ D)
    distance = c1**2 * float(np.sum(x_0.astype(np.float64) ** 2))
    assert c.mean_distance == pytest.approx(distance, rel=1e-5)
    assert c.kl_per_dim == pytest.approx(distance / (2 * beta_tilde * x_0.size), rel=1e-5)


def test_the_model_mean_is_eq_11_when_x0_comes_from_eps() -> None:
    schedule = make_schedule("linear", 1000)
    rng = np.random.default_rng(3)
    x_0 = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    t = 400
    x_t = q_sample(schedule, x_0, t, rng.standard_normal(SHAPE).astype(np.float32))
    eps_hat = rng.standard_normal(SHAPE).astype(np.float32)
    x0_pred = x0_from_eps(schedule, x_t.astype(np.float64), t, eps_hat)  # unclipped x̂_0 (eq. 15)
    c = compare_posteriors(schedule, x_0, x_t, x0_pred, t, np.zeros(SHAPE, np.float32))
    beta, alpha, ab_t, _ab_prev, _bt = _by_hand(t)
    eq_11 = (x_t.astype(np.float64) - beta / math.sqrt(1.0 - ab_t) * eps_hat) / math.sqrt(alpha)
    np.testing.assert_allclose(c.mean_p, eq_11, atol=2e-5)
    np.testing.assert_array_equal(c.sample_p, c.mean_p)  # z = 0


def test_a_perfect_model_matches_q_and_the_variance_choice_sets_the_kl() -> None:
    schedule = make_schedule("linear", 1000)
    x_0 = np.linspace(-1, 1, np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    t = 100
    x_t = q_sample(schedule, x_0, t, np.ones(SHAPE, np.float32))
    z = np.ones(SHAPE, np.float32)
    small = compare_posteriors(schedule, x_0, x_t, x_0, t, z, "beta-tilde")
    assert small.mean_distance == 0.0 and small.kl_per_dim == 0.0
    large = compare_posteriors(schedule, x_0, x_t, x_0, t, z, "beta")
    bt, b = large.beta_tilde, large.beta
    assert large.sigma2 == b
    assert large.kl_per_dim == pytest.approx(0.5 * (bt / b - 1 + math.log(b / bt)), rel=1e-12)
    np.testing.assert_allclose(large.sample_p - large.mean_p, math.sqrt(b) * z, atol=1e-6)


def test_at_t_1_both_are_point_masses() -> None:
    schedule = make_schedule("linear", 1000)
    x_0 = np.full(SHAPE, 0.25, np.float32)
    x_t = q_sample(schedule, x_0, 1, np.ones(SHAPE, np.float32))
    c = compare_posteriors(schedule, x_0, x_t, np.zeros(SHAPE, np.float32), 1, np.ones(SHAPE, np.float32))
    assert (c.coef_x0, c.coef_xt, c.beta_tilde, c.sigma2) == (pytest.approx(1.0), 0.0, 0.0, 0.0)
    assert c.kl_per_dim is None
    np.testing.assert_allclose(c.sample_q, x_0, atol=1e-7)  # q(x_0 | x_1, x_0) is x_0 itself
    np.testing.assert_array_equal(c.sample_p, c.mean_p)


def test_gaussian_kl_closed_form_and_bad_input() -> None:
    mq, mp = np.zeros(4), np.full(4, 2.0)
    # per dim: ½ (1/4 − 1 + ln 4) + 4/(2·4)
    assert gaussian_kl_per_dim(mq, 1.0, mp, 4.0) == pytest.approx(0.5 * (0.25 - 1 + math.log(4)) + 0.5)
    with pytest.raises(UsageError):
        gaussian_kl_per_dim(mq, 0.0, mp, 1.0)
    schedule = make_schedule("linear", 10)
    with pytest.raises(UsageError, match="one shape"):
        compare_posteriors(schedule, np.zeros(SHAPE), np.zeros(SHAPE), np.zeros((3, 4, 5)), 2, np.zeros(SHAPE))
    with pytest.raises(UsageError, match="t must lie"):
        compare_posteriors(schedule, np.zeros(SHAPE), np.zeros(SHAPE), np.zeros(SHAPE), 11, np.zeros(SHAPE))

"""training/vlb.py against closed forms: Gaussian KL, the discretized decoder, the learned range, L_t."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.training.vlb import (
    VariationalBound,
    discretized_gaussian_log_likelihood,
    hybrid_loss,
    learned_range_log_variance,
    normal_kl,
)

LEVELS = torch.linspace(-1.0, 1.0, 256, dtype=torch.float64)  # the 256 levels of an 8-bit image in [−1, 1]


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def test_normal_kl_closed_forms():
    t = torch.tensor
    # identical Gaussians: 0
    assert normal_kl(t(0.3), t(-1.2), t(0.3), t(-1.2)).item() == 0.0
    # KL(N(0, 1) ‖ N(1, 4)) = log 2 + (1 + 1)/(2·4) − ½
    kl = normal_kl(t(0.0), t(0.0), t(1.0), t(math.log(4.0))).item()
    assert kl == pytest.approx(math.log(2.0) + 0.25 - 0.5, abs=1e-7)
    # KL(N(0, 4) ‖ N(0, 1)) = ½ (4 − 1 − log 4)
    assert normal_kl(t(0.0), t(math.log(4.0)), t(0.0), t(0.0)).item() == pytest.approx(0.5 * (3 - math.log(4)))
    # against torch.distributions on random values (elementwise, broadcasting), and never negative
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(1000, generator=g, dtype=torch.float64), torch.randn(1000, generator=g, dtype=torch.float64)
    l1, l2 = torch.randn(1000, generator=g, dtype=torch.float64), torch.randn(1000, generator=g, dtype=torch.float64)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, torch.exp(0.5 * l1)),
                                            torch.distributions.Normal(m2, torch.exp(0.5 * l2)))
    torch.testing.assert_close(normal_kl(m1, l1, m2, l2), ref, rtol=1e-10, atol=1e-12)
    assert (normal_kl(m1, l1, m2, l2) >= 0).all()


@pytest.mark.parametrize("mean, scale", [(0.0, 0.5), (0.37, 0.01), (-0.99, 0.002), (1.5, 0.3), (-3.0, 1.0),
                                         (0.2, 1e-4), (0.0, 20.0)])
def test_decoder_probabilities_sum_to_one_over_the_256_bins(mean, scale):
    mean_t = torch.full_like(LEVELS, mean)
    log_p = discretized_gaussian_log_likelihood(LEVELS, mean_t, torch.full_like(LEVELS, math.log(scale)))
    assert torch.isfinite(log_p).all() and (log_p <= 0).all()
    assert float(torch.exp(log_p).sum()) == pytest.approx(1.0, abs=1e-9)


def test_decoder_likelihood_closed_forms():
    h = 1.0 / 255.0
    # interior level: P = Φ((x + h − μ)/σ) − Φ((x − h − μ)/σ)
    x, mu, sigma = LEVELS[100].item(), 0.1, 0.05
    got = discretized_gaussian_log_likelihood(torch.tensor(x), torch.tensor(mu), torch.tensor(math.log(sigma))).item()
    assert got == pytest.approx(math.log(_phi((x + h - mu) / sigma) - _phi((x - h - mu) / sigma)), rel=1e-6)
    # the edges reach to ∓∞
    low = discretized_gaussian_log_likelihood(torch.tensor(-1.0), torch.tensor(-0.95), torch.tensor(math.log(sigma)))
    assert low.item() == pytest.approx(math.log(_phi((-1.0 + h + 0.95) / sigma)), rel=1e-6)
    high = discretized_gaussian_log_likelihood(torch.tensor(1.0), torch.tensor(-0.9), torch.tensor(math.log(0.5)))
    assert high.item() == pytest.approx(math.log(1.0 - _phi((1.0 - h + 0.9) / 0.5)), rel=1e-6)
    # a point mass on a level: all its probability in that bin (log p -> 0), float32 too
    for dtype in (torch.float64, torch.float32):
        levels = LEVELS.to(dtype)
        log_p = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, levels[37].item()),
                                                    torch.full_like(levels, math.log(1e-4)))
        assert log_p[37].item() == pytest.approx(0.0, abs=1e-6)
        # the neighbour bin lies z = h/σ ≈ 39σ away: log Φ(−z) ≈ −z²/2 − log z − ½ log 2π, finite in float32 too
        z = h / 1e-4
        assert torch.isfinite(log_p).all()
        assert log_p[36].item() == pytest.approx(-z * z / 2 - math.log(z) - 0.5 * math.log(2 * math.pi), rel=1e-3)
    # both bin edges far in the upper tail: Φ(b) − Φ(a) would cancel to 0 in floating point
    f64 = torch.float64
    far = discretized_gaussian_log_likelihood(torch.tensor(0.5, dtype=f64), torch.tensor(0.0, dtype=f64),
                                              torch.tensor(math.log(0.05), dtype=f64)).item()
    z_lo, z_hi = (0.5 - h) / 0.05, (0.5 + h) / 0.05  # ≈ 10σ: P = Q(z_lo) − Q(z_hi) with Q(z) = erfc(z/√2)/2
    exact = math.log(0.5 * (math.erfc(z_lo / math.sqrt(2)) - math.erfc(z_hi / math.sqrt(2))))
    assert far == pytest.approx(exact, rel=1e-9)
    assert 1.0 - _phi(z_lo) - (1.0 - _phi(z_hi)) < 1e-15  # what the naive difference would have given


def test_learned_range_interpolates_log_variance_between_beta_tilde_and_beta():
    log_b, log_bt = torch.tensor(math.log(0.02)), torch.tensor(math.log(0.005))
    v = torch.tensor([-1.0, 0.0, 1.0])
    got = learned_range_log_variance(v, log_b, log_bt)
    torch.testing.assert_close(got, torch.stack([log_bt, (log_b + log_bt) / 2, log_b]))


def _batch(schedule, t_values, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(t_values)
    x0 = LEVELS.float()[torch.randint(0, 256, (n, 3, 4, 4), generator=g)]
    eps = torch.randn(n, 3, 4, 4, generator=g)
    t = torch.tensor(t_values, dtype=torch.int64)
    ab = torch.from_numpy(schedule.alphas_cumprod.astype(np.float32))[t - 1].view(-1, 1, 1, 1)
    return x0, ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t, eps


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_vlb_terms_closed_forms(kind):
    schedule = make_schedule(kind, 1000)
    bound = VariationalBound(schedule)
    x0, x_t, t, eps = _batch(schedule, [1, 2, 10, 500, 1000])
    # ε̂ = ε makes x̂_0 = x_0 and μ_θ = μ̃_t; v = −1 makes Σ_θ = β̃_t: the KL is 0 for t > 1
    terms = bound.terms(x0, x_t, t, eps, -torch.ones_like(x0))
    assert terms[1:].abs().max().item() < 2e-5
    # at t = 1 it is the decoder's NLL of x_0 under N(x_0, β̃_2) (β̃_1 = 0 is clipped): −log2 erf(h/(σ√2))
    sigma = math.sqrt(schedule.posterior_variance[1])
    p_interior = math.erf((1.0 / 255.0) / (sigma * math.sqrt(2.0)))
    interior = (x0[0].abs() < 0.999).float()
    p_edge = _phi((1.0 / 255.0) / sigma)
    expected = -(interior * math.log2(p_interior) + (1 - interior) * math.log2(p_edge)).mean().item()
    assert terms[0].item() == pytest.approx(expected, rel=1e-4)
    # a wrong mean costs KL = (Δμ)²/(2β̃)/ln 2 per dimension, exactly
    shift = 0.01
    moved = bound.terms(x0, x_t, t, eps + shift, -torch.ones_like(x0))
    coef = schedule.posterior_mean_coef1 * np.sqrt(1.0 / schedule.alphas_cumprod - 1.0)  # dμ/dε̂
    for i, ti in enumerate(t.tolist()[1:], start=1):
        want = (coef[ti - 1] * shift) ** 2 / (2 * schedule.posterior_variance[ti - 1]) / math.log(2)
        assert moved[i].item() == pytest.approx(want, rel=2e-3, abs=1e-7)


def test_hybrid_loss_trains_the_mean_with_l_simple_and_the_variance_with_l_vlb():
    schedule = make_schedule("linear", 1000)
    bound = VariationalBound(schedule)
    x0, x_t, t, eps = _batch(schedule, [1, 3, 40, 700], seed=1)
    g = torch.Generator().manual_seed(2)
    output = (0.3 * torch.randn(4, 6, 4, 4, generator=g)).requires_grad_()
    simple, vlb, objective = hybrid_loss(output, eps, x0, x_t, t, bound, 0.001)
    objective.backward()
    assert output.grad is not None
    eps_grad, v_grad = output.grad[:, :3], output.grad[:, 3:]
    # the ε half sees only L_simple (the stop-gradient on the mean): d/dε̂ mean ‖ε − ε̂‖² = 2(ε̂ − ε)/numel
    torch.testing.assert_close(eps_grad, 2 * (output[:, :3].detach() - eps) / eps.numel())
    # the v half sees only λ·T·L_t
    v = output[:, 3:].detach().clone().requires_grad_()
    (0.001 * 1000 * bound.terms(x0, x_t, t, output[:, :3].detach(), v).mean()).backward()
    torch.testing.assert_close(v_grad, v.grad)
    assert vlb is not None and objective.item() == pytest.approx(simple.mean().item() + 0.001 * vlb.mean().item())
    # without a bound: the plain L_simple, the output is ε̂ alone
    simple_only, none, objective = hybrid_loss(output[:, :3], eps, x0, x_t, t, None, 0.001)
    assert none is None and objective.item() == pytest.approx(simple_only.mean().item())

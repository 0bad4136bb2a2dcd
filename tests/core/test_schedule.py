import math

import numpy as np
import pytest

from diffusion_studio.core.schedule import ScheduleKind, make_schedule
from diffusion_studio.errors import UsageError

ARRAYS = [
    "betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "snr",
]


def test_linear_T1000_is_exactly_the_ddpm_linspace() -> None:
    s = make_schedule("linear", 1000)
    assert s.kind is ScheduleKind.LINEAR and s.T == 1000
    np.testing.assert_array_equal(s.betas, np.linspace(1e-4, 0.02, 1000))
    assert s.betas[0] == 1e-4 and s.betas[-1] == 0.02
    # ᾱ_T of the DDPM schedule is about 4.04e-5 (x_T is almost pure noise).
    assert s.alphas_cumprod[-1] == pytest.approx(math.exp(np.log1p(-s.betas).sum()), rel=1e-12)
    assert s.alphas_cumprod[-1] == pytest.approx(4.0358e-5, rel=1e-3)


def test_linear_other_T_scales_the_endpoints() -> None:
    s = make_schedule("linear", 250)
    np.testing.assert_allclose(s.betas, np.linspace(4e-4, 0.08, 250), rtol=0, atol=1e-15)
    tiny = make_schedule("linear", 10)
    assert tiny.betas.max() == 0.999 and np.all(tiny.alphas_cumprod > 0)


def test_cosine_matches_improved_ddpm_and_is_clipped() -> None:
    T, s_ = 1000, 0.008
    s = make_schedule(ScheduleKind.COSINE, T)
    f = lambda t: math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2  # noqa: E731
    assert s.betas.max() == 0.999 and s.betas[-1] == 0.999
    assert np.all(s.betas <= 0.999)
    # Where no β was clipped, ᾱ_t = f(t)/f(0) (Improved DDPM eq. 17).
    unclipped = int(np.argmax(s.betas >= 0.999))
    for t in (1, 10, 100, 500, unclipped):
        assert s.alphas_cumprod[t - 1] == pytest.approx(f(t) / f(0), rel=1e-9)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1, 2, 50, 1000])
def test_derived_arrays(kind: str, T: int) -> None:
    s = make_schedule(kind, T)
    for name in ARRAYS:
        a = getattr(s, name)
        assert a.dtype == np.float64 and a.shape == (T,), name
        assert np.all(np.isfinite(a)), name
        with pytest.raises(ValueError):
            a[0] = 0.0  # frozen
    ab = s.alphas_cumprod
    assert np.all(np.diff(ab) < 0) and 0 < ab[-1] <= ab[0] < 1
    np.testing.assert_allclose(ab, np.cumprod(1 - s.betas), rtol=1e-14)
    np.testing.assert_allclose(s.alphas_cumprod_prev, np.append(1.0, ab[:-1]))
    np.testing.assert_allclose(s.sqrt_alphas_cumprod ** 2, ab, rtol=1e-14)
    np.testing.assert_allclose(s.sqrt_one_minus_alphas_cumprod ** 2, 1 - ab, rtol=1e-14)
    np.testing.assert_allclose(s.snr, ab / (1 - ab), rtol=1e-14)
    assert np.all(np.diff(s.snr) < 0)
    assert s.posterior_variance[0] == 0.0
    if T > 1:
        assert s.posterior_log_variance_clipped[0] == pytest.approx(math.log(s.posterior_variance[1]))


def test_posterior_matches_gaussian_conditioning() -> None:
    """β̃_t and μ̃_t's coefficients from Bayes' rule on x_{t−1}|x_0 and x_t|x_{t−1}."""
    s = make_schedule("linear", 1000)
    t = np.arange(2, 1001)
    ab_prev, alpha, beta = s.alphas_cumprod[t - 2], s.alphas[t - 1], s.betas[t - 1]
    # prior x_{t−1} ~ N(√ᾱ_{t−1} x_0, 1−ᾱ_{t−1}); likelihood x_t ~ N(√α_t x_{t−1}, β_t)
    var = 1.0 / (1.0 / (1.0 - ab_prev) + alpha / beta)
    np.testing.assert_allclose(s.posterior_variance[t - 1], var, rtol=1e-10)
    np.testing.assert_allclose(s.posterior_mean_coef1[t - 1], var * np.sqrt(ab_prev) / (1 - ab_prev), rtol=1e-10)
    np.testing.assert_allclose(s.posterior_mean_coef2[t - 1], var * np.sqrt(alpha) / beta, rtol=1e-10)
    np.testing.assert_allclose(s.posterior_log_variance_clipped[1:], np.log(var), rtol=1e-10)


@pytest.mark.parametrize(
    "kind,T", [("sigmoid", 1000), ("linear", 0), ("linear", -3), ("linear", 2.5), ("linear", "10"), ("linear", True)]
)
def test_bad_schedule_arguments(kind: str, T: object) -> None:
    with pytest.raises(UsageError) as e:
        make_schedule(kind, T)  # type: ignore[arg-type]
    assert "\n" not in str(e.value) and str(e.value).endswith(".")


def test_scaled_linear_is_squared_linspace_of_square_roots() -> None:
    s = make_schedule("scaled_linear", 1000, 0.00085, 0.012)  # Stable Diffusion's ends
    assert s.kind is ScheduleKind.SCALED_LINEAR
    np.testing.assert_allclose(s.betas, np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000) ** 2, rtol=1e-15)
    assert s.betas[0] == pytest.approx(0.00085, rel=1e-14) and s.betas[-1] == pytest.approx(0.012, rel=1e-14)
    # √β grows by a constant step
    np.testing.assert_allclose(np.diff(np.sqrt(s.betas)), (math.sqrt(0.012) - math.sqrt(0.00085)) / 999, rtol=1e-9)
    # without ends: diffusers' defaults 1e-4 and 0.02 for any T (no 1000/T scaling)
    d = make_schedule("scaled_linear", 50)
    assert d.betas[0] == pytest.approx(1e-4) and d.betas[-1] == pytest.approx(0.02)


def test_explicit_linear_ends_are_not_scaled() -> None:
    np.testing.assert_array_equal(make_schedule("linear", 250, 1e-4, 0.02).betas, np.linspace(1e-4, 0.02, 250))
    np.testing.assert_array_equal(make_schedule("linear", 1000, 1e-4, 0.02).betas, make_schedule("linear", 1000).betas)
    # the defaults stay DDPM's, scaled by 1000/T
    assert make_schedule("linear", 100).betas[-1] == pytest.approx(0.2)


def test_squaredcos_cap_v2_is_our_cosine() -> None:
    from diffusion_studio.core.schedule import parse_schedule_kind

    assert parse_schedule_kind("squaredcos_cap_v2") is ScheduleKind.COSINE
    assert parse_schedule_kind("scaled_linear") is ScheduleKind.SCALED_LINEAR
    np.testing.assert_array_equal(make_schedule("squaredcos_cap_v2", 100).betas, make_schedule("cosine", 100).betas)


@pytest.mark.parametrize(("args", "message"), [
    (("cosine", 100, 1e-4, 0.02), "the cosine schedule takes no beta_start / beta_end"),
    (("linear", 100, 1e-4, None), r"beta_end must be a number in \(0, 1\) \(give both β ends or neither\), got None\."),
    (("linear", 100, 0.02, 1e-4), "the β ends must satisfy 0 < beta_start <= beta_end < 1, got 0.02 and 0.0001."),
    (("scaled_linear", 100, 0.0, 0.5), "the β ends must satisfy"),
    (("linear", 100, 1e-4, 1.0), "the β ends must satisfy"),
    (("linear", 100, 1e-4, float("nan")), "the β ends must satisfy"),
    (("linear", 100, "1e-4", 0.02), "beta_start must be a number"),
    (("sigmoid", 100), "unknown schedule 'sigmoid'; choose one of linear, cosine, scaled_linear."),
])
def test_bad_beta_ends_and_kinds(args: tuple, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        make_schedule(*args)


def test_scaled_linear_derived_arrays() -> None:
    s = make_schedule("scaled_linear", 300, 0.00085, 0.012)
    np.testing.assert_allclose(s.alphas_cumprod, np.cumprod(1 - s.betas), rtol=1e-14)
    np.testing.assert_allclose(s.posterior_log_variance_clipped[1:], np.log(s.posterior_variance[1:]), rtol=1e-12)
    assert s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1]

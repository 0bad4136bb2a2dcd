"""Prediction kinds (ε, v, x_0) and the learned-range variance: closed forms, round trips, the loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion_studio.core.forward import q_sample
from diffusion_studio.core.guidance import combine_guidance, guided_eps_fn
from diffusion_studio.core.prediction import (
    MIN_VARIANCE,
    PredictionKind,
    VarianceKind,
    interpret_output,
    learned_log_variance,
    output_channels,
    parse_prediction_kind,
    parse_variance_kind,
    split_learned_range,
    v_from_x0_eps,
    x0_eps_from_v,
)
from diffusion_studio.core.sampling_loop import ddpm_variance_for, run_to_end, sample
from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.errors import UsageError

SCHEDULE = make_schedule("cosine", 1000)
SHAPE = (2, 3, 4, 4)


def data(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, shape), rng.standard_normal(shape)


# --- names ----------------------------------------------------------------------------------------


def test_parse_kinds() -> None:
    assert parse_prediction_kind("epsilon") is PredictionKind.EPSILON
    assert parse_prediction_kind(" V-Prediction ") is PredictionKind.V_PREDICTION
    assert parse_prediction_kind(PredictionKind.SAMPLE) is PredictionKind.SAMPLE
    assert parse_variance_kind("fixed-small") is VarianceKind.FIXED_SMALL
    assert parse_variance_kind("learned_range") is VarianceKind.LEARNED_RANGE
    with pytest.raises(UsageError, match=r"^Unknown prediction type 'eps'; choose one of epsilon, v_prediction, "
                                         r"sample\.$"):
        parse_prediction_kind("eps")
    with pytest.raises(UsageError, match=r"^Unknown variance type None; choose one of fixed_large, fixed_small, "
                                         r"learned_range\.$"):
        parse_variance_kind(None)
    assert output_channels(3, VarianceKind.LEARNED_RANGE) == 6 and output_channels(3, VarianceKind.FIXED_SMALL) == 3
    assert ddpm_variance_for("fixed_large").value == "beta" and ddpm_variance_for("fixed_small").value == "beta-tilde"
    assert ddpm_variance_for("learned_range") is None


# --- conversions ----------------------------------------------------------------------------------


def test_v_closed_form_and_round_trip() -> None:
    x0, eps = data()
    t = np.array([1, 700])
    x_t = q_sample(SCHEDULE, x0, t, eps)
    v = v_from_x0_eps(SCHEDULE, x0, t, eps)
    # v = √ᾱ ε − √(1−ᾱ) x_0 written out for the second image
    ab = SCHEDULE.alphas_cumprod[699]
    np.testing.assert_allclose(v[1], math.sqrt(ab) * eps[1] - math.sqrt(1 - ab) * x0[1], rtol=1e-13, atol=1e-15)
    x0_back, eps_back = x0_eps_from_v(SCHEDULE, x_t, t, v)
    np.testing.assert_allclose(x0_back, x0, atol=1e-12)
    np.testing.assert_allclose(eps_back, eps, atol=1e-12)
    # (x_t, v) is (x_0, ε) rotated by φ (cos φ = √ᾱ_t): the norm is kept pixel by pixel
    np.testing.assert_allclose(x_t**2 + v**2, x0**2 + eps**2, rtol=1e-12)
    # at ᾱ → 1 (t = 1 of the cosine schedule, ᾱ ≈ 0.99996) v ≈ ε and x_t ≈ x_0
    assert np.abs(v[0] - eps[0]).max() < 0.02


@pytest.mark.parametrize("kind", list(PredictionKind))
def test_interpret_output_recovers_x0_and_eps(kind: PredictionKind) -> None:
    x0, eps = data(1)
    t = 321
    x_t = q_sample(SCHEDULE, x0, t, eps)
    output = {PredictionKind.EPSILON: eps, PredictionKind.SAMPLE: x0,
              PredictionKind.V_PREDICTION: v_from_x0_eps(SCHEDULE, x0, t, eps)}[kind]
    pred = interpret_output(SCHEDULE, x_t, output, t, kind)
    np.testing.assert_allclose(pred.x0, x0, atol=1e-12)
    np.testing.assert_allclose(pred.eps, eps, atol=1e-12)
    assert pred.var_frac is None
    # every kind satisfies eq. 4 with its (x̂_0, ε̂)
    ab = SCHEDULE.alphas_cumprod[t - 1]
    np.testing.assert_allclose(math.sqrt(ab) * pred.x0 + math.sqrt(1 - ab) * pred.eps, x_t, atol=1e-12)


def test_learned_range_split_and_fraction() -> None:
    x0, eps = data(2)
    x_t = q_sample(SCHEDULE, x0, 10, eps)
    v = np.linspace(-1, 1, eps.size).reshape(eps.shape)
    pred = interpret_output(SCHEDULE, x_t, np.concatenate([eps, v], axis=1), 10, PredictionKind.EPSILON,
                            VarianceKind.LEARNED_RANGE)
    np.testing.assert_array_equal(pred.eps, eps)
    assert pred.var_frac is not None
    np.testing.assert_allclose(pred.var_frac, (v + 1) / 2, rtol=0, atol=1e-15)
    assert pred.var_frac.min() == 0.0 and pred.var_frac.max() == 1.0
    a, b = split_learned_range(np.zeros((1, 6, 2, 2)), 3)
    assert a.shape == b.shape == (1, 3, 2, 2)
    with pytest.raises(UsageError, match=r"learned_range model must output 2 x 3 channels"):
        interpret_output(SCHEDULE, x_t, eps, 10, PredictionKind.EPSILON, VarianceKind.LEARNED_RANGE)


def test_learned_log_variance_improved_ddpm_eq15() -> None:
    ab_t, ab_s = SCHEDULE.alpha_bar(500), SCHEDULE.alpha_bar(450)  # a sub-sequence step 500 -> 450
    beta = 1 - ab_t / ab_s
    beta_tilde = (1 - ab_s) / (1 - ab_t) * beta
    assert learned_log_variance(ab_t, ab_s, 1.0) == pytest.approx(math.log(beta), rel=1e-14)
    assert learned_log_variance(ab_t, ab_s, 0.0) == pytest.approx(math.log(beta_tilde), rel=1e-14)
    # frac = ½: the geometric mean √(β β̃)
    assert math.exp(learned_log_variance(ab_t, ab_s, 0.5)) == pytest.approx(math.sqrt(beta * beta_tilde), rel=1e-12)
    # consecutive steps: the schedule's own β_t and β̃_t
    t = 300
    got = learned_log_variance(SCHEDULE.alpha_bar(t), SCHEDULE.alpha_bar(t - 1), np.array([0.0, 1.0]))
    np.testing.assert_allclose(got, [SCHEDULE.posterior_log_variance_clipped[t - 1], math.log(SCHEDULE.betas[t - 1])],
                               rtol=1e-12)
    # into x_0 (ᾱ_0 = 1): β̃ = 0, its log is clipped at MIN_VARIANCE as in diffusers (and stays finite)
    assert learned_log_variance(SCHEDULE.alpha_bar(1), 1.0, 0.0) == pytest.approx(math.log(MIN_VARIANCE))


# --- the sampling loop ----------------------------------------------------------------------------


def eps_net(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A deterministic ε-network of a linear Gaussian model with channel mixing."""
    ab = SCHEDULE.alphas_cumprod[t - 1][:, None, None, None]
    eps = np.sqrt(1 - ab) * (x - 0.3 * np.sqrt(ab)) / (0.2 * ab + 1 - ab)  # E[ε | x_t] for x_0 ~ N(0.3, 0.2)
    return (eps + 0.2 * np.sqrt(ab) * np.sin(2 * x)).astype(np.float32)  # plus an error that keeps x̂_0 bounded


def as_kind(kind: str, variance_half: float | None = None):
    """The same network re-parameterised: its v̂ or x̂_0 (float32), optionally with a constant v channel block."""

    def net(x: np.ndarray, t: np.ndarray) -> np.ndarray:
        eps = eps_net(x, t).astype(np.float64)
        ab = SCHEDULE.alphas_cumprod[t - 1][:, None, None, None]
        x0 = (x - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
        out = {"epsilon": eps, "sample": x0, "v_prediction": np.sqrt(ab) * eps - np.sqrt(1 - ab) * x0}[kind]
        if variance_half is not None:
            out = np.concatenate([out, np.full_like(out, variance_half)], axis=1)
        return out.astype(np.float32)

    return net


def final(net, sampler: str, steps: int = 12, seed: int = 4, **kw) -> np.ndarray:
    return run_to_end(sample(net, SCHEDULE, SHAPE, sampler=sampler, steps=steps,
                             rng=np.random.default_rng(seed), **kw)).x_prev


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp-2m"])
@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
def test_the_same_network_in_every_parameterisation_gives_the_same_image(sampler: str, kind: str) -> None:
    ref = final(eps_net, sampler, clip_x0=False)
    got = final(as_kind(kind), sampler, prediction=kind, clip_x0=False)
    np.testing.assert_allclose(got, ref, atol=2e-6)
    assert np.abs(ref).mean() > 0.2
    steps = list(sample(as_kind(kind), SCHEDULE, SHAPE, sampler=sampler, steps=5, rng=np.random.default_rng(0),
                        prediction=kind))
    ref_steps = list(sample(eps_net, SCHEDULE, SHAPE, sampler=sampler, steps=5, rng=np.random.default_rng(0)))
    for a, b in zip(steps, ref_steps):  # Step.eps / x0_pred stay ε̂ and x̂_0 whatever the network predicts
        np.testing.assert_allclose(a.x0_pred, b.x0_pred, atol=2e-5)
        np.testing.assert_allclose(a.eps, b.eps, atol=2e-5)


def test_learned_range_ends_are_the_fixed_variances() -> None:
    """v = +1 (frac 1) is σ² = β (fixed large), v = −1 (frac 0) is β̃ (fixed small), with the same noise."""
    large = final(as_kind("epsilon", 1.0), "ddpm", 25, variance="learned_range")
    small = final(as_kind("epsilon", -1.0), "ddpm", 25, variance="learned_range")
    np.testing.assert_allclose(large, final(eps_net, "ddpm", 25, ddpm_variance="beta"), atol=2e-6)
    np.testing.assert_allclose(small, final(eps_net, "ddpm", 25, ddpm_variance="beta-tilde"), atol=2e-6)
    assert np.abs(large - small).mean() > 0.05
    # the model's learned Σ wins over ddpm_variance
    np.testing.assert_array_equal(final(as_kind("epsilon", 1.0), "ddpm", 25, variance="learned_range",
                                        ddpm_variance="beta-tilde"), large)
    # in between: frac ½
    mid = final(as_kind("epsilon", 0.0), "ddpm", 25, variance="learned_range")
    assert np.abs(mid - large).mean() > 1e-3 and np.abs(mid - small).mean() > 1e-3


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m"])
def test_ddim_and_dpmpp_ignore_the_variance_half(sampler: str) -> None:
    np.testing.assert_array_equal(final(as_kind("epsilon", 0.7), sampler, variance="learned_range", eta=0.0),
                                  final(eps_net, sampler))


def test_variance_kind_sets_the_default_ddpm_variance() -> None:
    np.testing.assert_array_equal(final(eps_net, "ddpm", variance="fixed_small"),
                                  final(eps_net, "ddpm", ddpm_variance="beta-tilde"))
    np.testing.assert_array_equal(final(eps_net, "ddpm", variance="fixed_large"), final(eps_net, "ddpm"))
    # an explicit ddpm_variance wins
    np.testing.assert_array_equal(final(eps_net, "ddpm", variance="fixed_small", ddpm_variance="beta"),
                                  final(eps_net, "ddpm"))


def test_clip_range() -> None:
    zero = lambda x, t: np.zeros_like(x)  # noqa: E731  x̂_0 = x_T/√ᾱ_T is huge at t = T
    for r in (0.5, 2.0):
        first = next(sample(zero, SCHEDULE, SHAPE, sampler="ddim", steps=5, rng=np.random.default_rng(0),
                            clip_range=r))
        assert np.abs(first.x0_pred).max() == pytest.approx(r)
    with pytest.raises(UsageError, match=r"^The clip range must be a number in \(0, 1000\], got 0\.$"):
        sample(zero, SCHEDULE, SHAPE, rng=np.random.default_rng(0), clip_range=0)


def test_bad_arguments_and_outputs() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(UsageError, match="Unknown prediction type 'x0'"):
        sample(eps_net, SCHEDULE, SHAPE, rng=rng, prediction="x0")
    with pytest.raises(UsageError, match="Unknown variance type 'learned'"):
        sample(eps_net, SCHEDULE, SHAPE, rng=rng, variance="learned")
    with pytest.raises(UsageError, match=r"returned an output of shape \(2, 3, 4, 4\) for x of shape \(2, 3, 4, 4\) "
                                         r"\(expected \(2, 6, 4, 4\) for learned_range\)"):
        final(eps_net, "ddpm", variance="learned_range")


# --- guidance -------------------------------------------------------------------------------------


def test_guidance_on_learned_range_guides_the_prediction_half_only() -> None:
    rng = np.random.default_rng(3)
    u, c = rng.standard_normal((2, 6, 2, 2)).astype(np.float32), rng.standard_normal((2, 6, 2, 2)).astype(np.float32)
    g = combine_guidance(u, c, 4.0, "learned_range")
    np.testing.assert_allclose(g[:, :3], u[:, :3] + 4.0 * (c[:, :3] - u[:, :3]), rtol=1e-6)
    np.testing.assert_array_equal(g[:, 3:], c[:, 3:])
    # without learned_range all six channels are guided
    np.testing.assert_allclose(combine_guidance(u, c, 4.0)[:, 3:], u[:, 3:] + 4.0 * (c[:, 3:] - u[:, 3:]), rtol=1e-6)
    with pytest.raises(UsageError, match="even channel count"):
        combine_guidance(u[:, :5], c[:, :5], 2.0, "learned_range")

    calls: list[int] = []

    def denoiser(x, t, context, mask):
        calls.append(x.shape[0])
        pooled = context.sum(axis=(1, 2))[:, None, None, None]
        return np.concatenate([x + pooled, np.tanh(x - pooled)], axis=1).astype(np.float32)

    cond = rng.standard_normal((1, 4, 5)).astype(np.float32)
    unc = np.zeros((1, 4, 5), np.float32)
    mask = np.ones((1, 4), np.float32)
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    t = np.full(2, 7)
    out = guided_eps_fn(denoiser, cond, mask, unc, mask, 2.5, variance="learned_range")(x, t)
    assert calls == [4] and out.shape == (2, 6, 2, 2)
    ref_c, ref_u = denoiser(x, t, np.repeat(cond, 2, 0), None), denoiser(x, t, np.repeat(unc, 2, 0), None)
    np.testing.assert_allclose(out[:, :3], ref_u[:, :3] + 2.5 * (ref_c[:, :3] - ref_u[:, :3]), rtol=1e-6)
    np.testing.assert_array_equal(out[:, 3:], ref_c[:, 3:])

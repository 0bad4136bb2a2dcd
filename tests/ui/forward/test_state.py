"""The Forward process state (headless): closed form, Markov chain, coefficients, sources, filmstrip."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.errors import UsageError
from diffusion_studio.ui.forward import coefficients as fc
from diffusion_studio.ui.forward import sources
from diffusion_studio.ui.forward import state as fs
from diffusion_studio.ui.forward.coefficients import Coefficients
from diffusion_studio.ui.forward.state import ForwardState


def _gray(size: int = 32, level: int = 200) -> np.ndarray:
    return np.full((size, size, 3), level, np.uint8)


def test_coefficients_are_the_schedule_values_and_obey_the_ddpm_identities() -> None:
    s = make_schedule("cosine", 200)
    for t in (1, 2, 57, 200):
        c = Coefficients.at(s, t)
        assert (c.beta, c.alpha_bar, c.beta_tilde) == (s.betas[t - 1], s.alphas_cumprod[t - 1],
                                                       s.posterior_variance[t - 1])
        assert c.alpha == pytest.approx(1 - c.beta, abs=1e-15)
        assert c.sqrt_alpha_bar**2 + c.sqrt_one_minus_alpha_bar**2 == pytest.approx(1.0, abs=1e-12)
        assert c.snr == pytest.approx(c.alpha_bar / (1 - c.alpha_bar), rel=1e-12)
        prev = 1.0 if t == 1 else float(np.prod(1 - s.betas[: t - 1]))
        assert c.alpha_bar_prev == pytest.approx(prev, rel=1e-12)
        assert c.beta_tilde == pytest.approx((1 - prev) / (1 - c.alpha_bar) * c.beta, rel=1e-9, abs=1e-300)
    assert Coefficients.at(s, 1).beta_tilde == 0.0  # ᾱ_0 = 1
    with pytest.raises(UsageError):
        Coefficients.at(s, 201)


def test_displayed_values_parse_back_to_seven_significant_digits() -> None:
    c = Coefficients.at(make_schedule("linear", 1000), 731)
    rows = {key: float(text) for key, _sym, text, _m in fc.coefficient_rows(c)}
    assert rows["beta"] == pytest.approx(c.beta, rel=1e-6)
    assert rows["snr"] == pytest.approx(c.snr, rel=1e-6)
    assert rows.keys() == {"beta", "alpha", "alpha_bar", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "snr",
                           "beta_tilde"}
    assert f"{c.sqrt_alpha_bar:.4f} · x<sub>0</sub>" in fc.formula_html(c)


def test_closed_form_is_sqrt_alpha_bar_x0_plus_noise_with_one_fixed_eps() -> None:
    state = ForwardState(_gray(), T=100)
    s = state.schedule
    for t in (1, 40, 100):
        expected = s.sqrt_alphas_cumprod[t - 1] * state.x_0 + s.sqrt_one_minus_alphas_cumprod[t - 1] * state.eps
        np.testing.assert_allclose(state.x_t(t), expected, atol=1e-6)
    eps = state.eps.copy()
    state.set_t(70)
    np.testing.assert_array_equal(state.eps, eps)  # moving t keeps ε
    assert state.new_noise() == 1
    assert not np.array_equal(state.eps, eps)
    assert abs(float(state.eps.mean())) < 0.05 and float(state.eps.std()) == pytest.approx(1.0, abs=0.05)


def test_markov_chain_matches_the_closed_form_marginal() -> None:
    # A constant image: after t steps of eq. 2, x_t ~ N(√ᾱ_t x_0, (1−ᾱ_t) I) pixel-wise (eq. 4).
    state = ForwardState(_gray(64, 230), T=300)
    x0 = float(state.x_0.mean())
    for t in (30, 150, 300):
        x = state.markov_x_t(t)
        c = state.coefficients(t)
        assert float(x.mean()) == pytest.approx(c.sqrt_alpha_bar * x0, abs=0.02)
        assert float(x.std()) == pytest.approx(c.sqrt_one_minus_alpha_bar, rel=0.03)
    # ...with its own noise: the same distribution, not the same picture as the closed form.
    assert abs(fc.correlation(state.markov_x_t(300), state.x_t(300))) < 0.1


def test_markov_chain_does_not_depend_on_the_slider_path() -> None:
    direct = ForwardState(_gray(16), T=1000).markov_x_t(777)
    state = ForwardState(_gray(16), T=1000)
    for t in (900, 10, 500, 776, 1000, 3):
        state.markov_x_t(t)
    np.testing.assert_array_equal(state.markov_x_t(777), direct)
    one = state.markov_x_t(1)
    np.testing.assert_allclose(one, np.sqrt(1 - state.schedule.betas[0]) * state.x_0
                               + np.sqrt(state.schedule.betas[0]) * state.markov_noise(1), atol=1e-6)


def test_markov_cache_is_bounded_and_walks_in_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fs, "MARKOV_CACHE_BYTES", 20 * 3 * 16 * 16 * 4)  # room for 20 states
    state = ForwardState(_gray(16), T=200)
    assert state.stride == 10
    whole = state.markov_x_t(200)
    assert len(state._chain) == 21  # t = 0, 10, …, 200
    state.set_schedule("linear", 199)
    state.set_schedule("linear", 200)  # a new chain
    assert state.markov_position() == 0
    parts = 0
    while (x := state.markov_advance(200, 0.0)) is None:  # one step per call at a zero budget
        parts += 1
    assert parts == 199
    np.testing.assert_array_equal(x, whole)


def test_schedule_switch_changes_the_numbers_and_clamps_t() -> None:
    state = ForwardState(_gray(), T=1000, t=800)
    linear = state.coefficients()
    state.set_schedule("cosine", 1000)
    cosine = state.coefficients()
    assert cosine.alpha_bar != linear.alpha_bar
    assert cosine.alpha_bar == make_schedule("cosine", 1000).alphas_cumprod[799]
    state.set_schedule("cosine", 500)
    assert state.t == 500
    for bad in ((1, "linear"), (fs.T_MAX + 1, "linear"), (100, "quadratic")):
        with pytest.raises(UsageError):
            state.set_schedule(bad[1], bad[0])


def test_correlation_with_the_source_falls_from_one_to_zero() -> None:
    state = ForwardState(T=1000)  # the default Shapes example
    assert fc.correlation(state.x_t(1), state.x_0) > 0.99
    assert abs(fc.correlation(state.x_t(1000), state.x_0)) < 0.05
    assert fc.correlation(np.ones(4), np.arange(4)) == 0.0


def test_sources_are_resized_and_centre_cropped(tmp_path) -> None:
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 255  # the centre square is white, the sides black
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    image = sources.load_image(path, 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert image[:, 2:-2].min() > 240  # the black sides were cropped away
    rgba = np.zeros((10, 10, 4), np.uint8)  # fully transparent -> white
    assert sources.array_image(rgba, 16).min() == 255
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(UsageError, match="bad.png"):
        sources.load_image(tmp_path / "bad.png", 32)
    with pytest.raises(UsageError, match="missing.png does not exist"):
        sources.load_image(tmp_path / "missing.png", 32)


def test_filmstrip_shows_x0_then_x_t_at_evenly_spaced_t(tmp_path) -> None:
    state = ForwardState(_gray(16), T=1000)
    assert fs.filmstrip_timesteps(1000, 8) == [125, 250, 375, 500, 625, 750, 875, 1000]
    strip = state.filmstrip(gap=2)
    assert strip.shape == (16, 9 * 16 + 8 * 2, 3)
    np.testing.assert_array_equal(strip[:, :16], state.source)
    np.testing.assert_array_equal(strip[:, -16:], state.image(1000))
    out = fs.save_png(strip, tmp_path / "strip.png", scale=4)
    with Image.open(out) as im:
        assert im.size == (strip.shape[1] * 4, 64)
    assert not list(tmp_path.glob("*.tmp-*"))
    with pytest.raises(UsageError):
        fs.save_png(strip, tmp_path / "strip.jpg")


def test_each_input_change_is_signalled_once() -> None:
    state = ForwardState(_gray(16), T=100, t=80)
    seen: list[tuple[object, ...]] = []
    state.tChanged.connect(lambda t: seen.append(("t", t)))
    state.scheduleChanged.connect(lambda: seen.append(("schedule", state.T, state.t)))
    state.sourceChanged.connect(lambda: seen.append(("source", state.source_size)))
    state.noiseChanged.connect(lambda seed: seen.append(("noise", seed)))
    state.set_t(80)  # unchanged: no signal
    state.set_t(90)
    state.set_schedule("linear", 100)  # unchanged
    state.set_schedule("cosine", 50)  # t is clamped before anyone hears of the new schedule
    state.new_noise(7)
    state.set_source(_gray(8), "gray")
    assert seen == [("t", 90), ("schedule", 50, 50), ("t", 50), ("noise", 7), ("source", 8)]


def test_a_source_is_rebuilt_from_its_origin_at_another_size(tmp_path) -> None:
    state = ForwardState()  # Shapes example 0 at 64 px
    assert state.origin == sources.ShapesOrigin(0) and state.source_size == 64
    state.set_source_size(32)
    np.testing.assert_array_equal(state.source, sources.shapes_example(0, 32)[0])
    state.new_shapes_example()
    assert state.origin == sources.ShapesOrigin(1) and state.source_size == 32
    wide = np.zeros((40, 80, 3), np.uint8)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    state.load(sources.FileOrigin(tmp_path / "wide.png"), 16)
    assert (state.source_name, state.source_size) == ("wide.png", 16)
    with pytest.raises(UsageError, match="missing.png"):
        state.load(sources.FileOrigin(tmp_path / "missing.png"))
    assert state.origin == sources.FileOrigin(tmp_path / "wide.png")  # a failed load changes nothing
    state.set_source(_gray(8), "plain")  # no origin: another size resizes the array itself
    state.set_source_size(16)
    assert state.source_size == 16 and (state.source == 200).all()

"""The Forward process tab: the slider drives forwardImageView, the coefficients and the plot."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from diffusion_studio.core.images import from_uint8
from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.ui.forward.coefficients import correlation
from diffusion_studio.ui.forward.state import ForwardState
from diffusion_studio.ui.forward.workspace import ForwardWorkspace


@pytest.fixture
def workspace(qtbot):
    def make(**kwargs: object) -> ForwardWorkspace:
        ws = ForwardWorkspace(**kwargs)
        qtbot.addWidget(ws)
        ws.resize(1200, 760)
        ws.show()
        return ws

    return make


def _shown_coefficients(ws: ForwardWorkspace) -> dict[str, float]:
    return {key: float(label.text()) for key, label in ws.coefficientLabels.items()}


def _view_pixels(ws: ForwardWorkspace) -> np.ndarray:
    """What forwardImageView paints, sampled at each image pixel's centre from the grabbed widget."""
    view = ws.forwardImageView
    grabbed = view.grab().toImage()
    rect = view.image_rect()
    h, w = view.image_array().shape[:2]
    dpr = grabbed.devicePixelRatio()
    out = np.zeros((h, w, 3), np.uint8)
    for y in range(h):
        for x in range(w):
            px = grabbed.pixelColor(int((rect.left() + (x + 0.5) * rect.width() / w) * dpr),
                                    int((rect.top() + (y + 0.5) * rect.height() / h) * dpr))
            out[y, x] = (px.red(), px.green(), px.blue())
    return out


def test_objectnames_and_defaults(workspace) -> None:
    ws = workspace()
    for name in ("forwardImageView", "timestepSlider", "scheduleCombo"):
        assert ws.findChild(object, name) is not None, name
    assert (ws.timestepSlider.minimum(), ws.timestepSlider.maximum()) == (1, 1000)
    assert ws.controls.scheduleCombo.currentData() == "linear"
    assert ws.sourceView.image_array().shape == (64, 64, 3)  # the default Shapes example
    assert ws.controls.sourceLabel.text().startswith("Shapes: ")


def test_moving_the_slider_updates_view_coefficients_and_plot(qtbot, workspace) -> None:
    ws = workspace()
    before = ws.forwardImageView.image_array()
    ws.timestepSlider.setValue(400)
    after = ws.forwardImageView.image_array()
    assert ws.t() == 400 and ws.timestepSpin.value() == 400 and ws.schedulePlot.t() == 400
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, ws.state.image(400))
    s = make_schedule("linear", 1000)
    shown = _shown_coefficients(ws)
    expected = {"beta": s.betas[399], "alpha": s.alphas[399], "alpha_bar": s.alphas_cumprod[399],
                "sqrt_alpha_bar": s.sqrt_alphas_cumprod[399],
                "sqrt_one_minus_alpha_bar": s.sqrt_one_minus_alphas_cumprod[399], "snr": s.snr[399],
                "beta_tilde": s.posterior_variance[399]}
    for key, value in expected.items():
        assert shown[key] == pytest.approx(value, rel=1e-6), key
    assert f"{s.sqrt_alphas_cumprod[399]:.4f}" in ws.formulaLabel.text()
    assert "t = 400" in ws.forwardTitle.text()
    x400 = ws.schedulePlot.marker_x()
    ws.timestepSlider.setFocus()
    qtbot.keyClick(ws.timestepSlider, Qt.Key.Key_Right)  # the keyboard moves t by one
    assert ws.t() == 401 and ws.schedulePlot.marker_x() > x400
    ws.timestepSpin.setValue(1000)
    assert ws.timestepSlider.value() == 1000


def test_pixels_at_t1_are_the_source_and_at_T_uncorrelated_noise(workspace) -> None:
    ws = workspace()
    source = ws.state.source
    ws.set_t(1)
    shown = _view_pixels(ws)
    diff = np.abs(shown.astype(int) - source.astype(int))
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 6  # √(1−ᾱ_1) = 0.01: ~1.3 grey levels
    ws.set_t(1000)
    shown = _view_pixels(ws)
    assert abs(correlation(from_uint8(shown), from_uint8(source))) < 0.06
    assert float(from_uint8(shown).std()) > 0.5  # noise, not a blank image


def test_schedule_switch_changes_the_numbers(qtbot, workspace) -> None:
    ws = workspace()
    ws.set_t(500)
    linear = _shown_coefficients(ws)
    image = ws.forwardImageView.image_array()
    ws.controls.scheduleCombo.setCurrentIndex(ws.controls.scheduleCombo.findData("cosine"))
    cosine = _shown_coefficients(ws)
    ref = make_schedule("cosine", 1000)
    assert cosine["alpha_bar"] == pytest.approx(ref.alphas_cumprod[499], rel=1e-6)
    assert cosine["alpha_bar"] > 2 * linear["alpha_bar"]  # cosine keeps more signal mid-way
    assert not np.array_equal(image, ws.forwardImageView.image_array())
    ws.controls.stepsSpin.setValue(250)  # T below the current t clamps t
    assert ws.t() == 250 and ws.timestepSlider.maximum() == 250
    assert _shown_coefficients(ws)["alpha_bar"] == pytest.approx(make_schedule("cosine", 250).alphas_cumprod[-1],
                                                                 rel=1e-6)


def test_new_noise_redraws_eps_and_keeps_t(workspace) -> None:
    ws = workspace()
    ws.set_t(300)
    before = ws.forwardImageView.image_array()
    ws.controls.newNoiseButton.click()
    assert ws.t() == 300 and ws.controls.seedLabel.text() == "seed 1"
    after = ws.forwardImageView.image_array()
    assert not np.array_equal(before, after)
    # the same signal part, independent noise parts
    c = ws.state.coefficients()
    signal = c.sqrt_alpha_bar * ws.state.x_0
    assert abs(correlation(from_uint8(before) - signal, from_uint8(after) - signal)) < 0.1


def test_markov_view_follows_the_slider_in_slices(qtbot, workspace) -> None:
    state = ForwardState(np.full((32, 32, 3), 220, np.uint8), T=1000)
    ws = workspace(state=state)
    ws.controls.markovCheck.setChecked(True)
    assert ws.markovPanel.isVisible()
    ws.set_t(1000)
    qtbot.waitUntil(lambda: not ws.markov_pending(), timeout=20000)
    assert not ws.markovTimer.isActive()
    markov = from_uint8(ws.markovView.image_array())
    c = state.coefficients(1000)
    # x_1000 ~ N(√ᾱ x_0, (1−ᾱ) I) with √ᾱ ≈ 0.006: almost N(0, 1), which the display clips to [-1, 1];
    # a standard normal clipped to [-1, 1] has variance 1 − 2φ(1).
    assert abs(float(markov.mean()) - c.sqrt_alpha_bar * float(state.x_0.mean())) < 0.05
    clipped_std = math.sqrt(1 - 2 * math.exp(-0.5) / math.sqrt(2 * math.pi))
    assert float(markov.std()) == pytest.approx(clipped_std, rel=0.04)
    assert "1000 Markov steps" in ws.markovTitle.text()
    ws.set_t(999)  # one step back: from the cache, no waiting
    assert not ws.markov_pending()
    np.testing.assert_array_equal(ws.markovView.image_array(), state.markov_image(999))
    ws.controls.markovCheck.setChecked(False)
    assert not ws.markovPanel.isVisible()


def test_open_image_and_size_change(workspace, tmp_path) -> None:
    ws = workspace()
    picture = np.zeros((30, 60, 3), np.uint8)
    picture[..., 2] = 255
    Image.fromarray(picture).save(tmp_path / "blue.jpg")
    assert ws.open_image(tmp_path / "blue.jpg")
    assert ws.controls.sourceLabel.text().startswith("blue.jpg")
    ws.set_t(1)
    assert ws.sourceView.image_array().shape == (64, 64, 3)
    assert ws.forwardImageView.image_array()[..., 2].mean() > 240
    ws.controls.sizeCombo.setCurrentIndex(ws.controls.sizeCombo.findData(32))
    assert ws.state.source.shape == (32, 32, 3) and ws.forwardImageView.image_array().shape == (32, 32, 3)


def test_bad_image_is_a_dialog_and_keeps_the_source(qtbot, workspace, tmp_path) -> None:
    ws = workspace()
    source = ws.state.source.copy()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with qtbot.waitSignal(ws.errorOccurred) as blocker:
        assert not ws.open_image(tmp_path / "broken.png")
    assert "broken.png" in blocker.args[1] and "\n" not in blocker.args[1]
    np.testing.assert_array_equal(ws.state.source, source)


def test_generate_image_becomes_the_source(qtbot, workspace) -> None:
    shown: list[np.ndarray | None] = [None]
    ws = workspace(image_source=lambda: shown[0])
    with qtbot.waitSignal(ws.statusMessage):
        assert not ws.use_generate_image()  # nothing generated yet: a status message
    shown[0] = np.full((8, 8, 4), (255, 0, 0, 255), np.uint8)
    ws.controls.fromGenerateButton.click()
    assert ws.controls.sourceLabel.text().startswith("Image from the Generate tab")
    assert (ws.state.source == (255, 0, 0)).all()


def test_play_runs_to_T_and_stops(qtbot, workspace) -> None:
    ws = workspace()
    ws.controls.stepsSpin.setValue(25)
    ws.playButton.click()
    assert ws.playTimer.isActive() and ws.t() == 1
    qtbot.waitUntil(lambda: ws.t() == 25, timeout=10000)
    assert not ws.playTimer.isActive() and not ws.playButton.isChecked()


def test_filmstrip_export_writes_a_png(workspace, tmp_path) -> None:
    ws = workspace()
    path = ws.export_filmstrip(tmp_path / "strip.png")
    with Image.open(path) as im:
        strip = np.asarray(im)
    assert strip.shape == (128, 9 * 128 + 8 * 2 * 2, 3)  # 64 px tiles upscaled 2x, gaps too
    np.testing.assert_array_equal(strip[::2, :128:2], ws.state.source)


def test_window_has_the_forward_tab(qtbot, make_window) -> None:
    window = make_window()
    ws = window.workspace("Forward process")
    assert isinstance(ws, ForwardWorkspace)
    assert window.findChild(QLabel, "beta_tildeValue") is not None
    window.tabs.setCurrentWidget(ws)
    ws.timestepSlider.setValue(10)
    assert float(ws.coefficientLabels["alpha_bar"].text()) == pytest.approx(
        make_schedule("linear", 1000).alphas_cumprod[9], rel=1e-6)


def test_the_view_follows_a_state_changed_elsewhere(workspace) -> None:
    state = ForwardState(T=500, t=10)
    ws = workspace(state=state)
    state.set_t(123)
    assert (ws.timestepSlider.value(), ws.timestepSpin.value(), ws.schedulePlot.t()) == (123, 123, 123)
    assert "t = 123" in ws.forwardTitle.text()
    state.set_schedule("cosine", 100)
    assert ws.controls.scheduleCombo.currentData() == "cosine" and ws.controls.stepsSpin.value() == 100
    assert ws.timestepSlider.maximum() == 100 and ws.timestepSlider.value() == 100
    state.new_noise(42)
    assert ws.controls.seedLabel.text() == "seed 42"
    state.set_source(np.full((32, 32, 3), 7, np.uint8), "dark")
    assert (ws.sourceView.image_array() == 7).all() and ws.controls.sourceLabel.text().startswith("dark")
    assert ws.controls.sizeCombo.currentData() == 32

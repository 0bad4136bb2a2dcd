"""The Forward tab at an imported diffusers model's size and channels (issue 12 §5): the grey 16²
v-prediction model and the grey 256² model (tests/conftest.py `diffusers_models`), x_t, x̂₀, ε̂ and
the posterior images grey (R = G = B) at the model's size, the model's own (unscaled linear) schedule."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QSlider, QWidget

from diffusion_studio.core.images import to_uint8
from diffusion_studio.core.prediction import PredictionKind
from diffusion_studio.ui.forward.model_probe import OutputKind, x0_eps_from_output
from diffusion_studio.ui.forward.sources import SOURCE_SIZES
from diffusion_studio.ui.forward.state import ForwardState
from diffusion_studio.ui.forward.workspace import ForwardWorkspace
from diffusion_studio.ui.models import LoadedModel, load_model
from diffusion_studio.ui.widgets.image_view import ImageView

WAIT_MS = 30_000


def _grey(image: np.ndarray | None, size: int) -> np.ndarray:
    """The image is size × size RGB with R = G = B; its one channel."""
    assert image is not None and image.shape == (size, size, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], image[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    return image[..., 0]


def _workspace(qtbot, model: LoadedModel) -> ForwardWorkspace:
    """A Forward workspace on `model`, its note's button clicked, the model-prediction tab shown."""
    ws = ForwardWorkspace()
    qtbot.addWidget(ws)
    ws.resize(1200, 800)
    ws.show()
    ws.detailTabs.setCurrentWidget(ws.findChild(QWidget, "modelPredictionView"))
    ws.set_model(model)
    note = ws.modelPredictionView.note
    size = model.bundle.image_size
    assert note.isVisible() and note.button.text() == f"Use {size} × {size} grey and the model's schedule"
    assert "grey images and x₀ here is 64 × 64 RGB" in note.label.text()
    qtbot.mouseClick(note.button, Qt.MouseButton.LeftButton)
    assert not note.isVisible()
    return ws


def _wait(qtbot, ws: ForwardWorkspace, t: int):
    views = ws.modelViews
    qtbot.waitUntil(lambda: (p := views.last_prediction()) is not None and p.t == t, timeout=WAIT_MS)
    return views.last_prediction()


def _view(ws: ForwardWorkspace, name: str) -> ImageView:
    return ws.findChild(ImageView, name)


def test_sixteen_is_offered_and_grey_sources_are_luma() -> None:
    assert SOURCE_SIZES[0] == 16
    st = ForwardState(seed=3)
    rgb = st.source.copy()
    st.set_channels(1)
    assert st.x_0.shape == (1, 64, 64) and st.eps.shape == (1, 64, 64)
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    luma = _grey(st.source, 64)
    assert np.abs(luma - (0.299 * r + 0.587 * g + 0.114 * b)).max() <= 1  # ITU-R 601, as PIL's "L"
    assert not np.array_equal(rgb[..., 0], rgb[..., 1])  # the Shapes example was coloured
    _grey(st.image(40), 64)
    _grey(st.markov_image(3), 64)
    st.set_source_size(16)  # rebuilt from the Shapes seed at 16², still grey
    assert _grey(st.source, 16).shape == (16, 16) and st.x_0.shape == (1, 16, 16)
    st.set_channels(3)
    assert st.x_0.shape == (3, 16, 16) and not np.array_equal(st.source[..., 0], st.source[..., 1])


def test_grey_16_v_prediction_model(qtbot, diffusers_models) -> None:
    model = load_model(diffusers_models.bundle("gray"), "cpu")
    b = model.bundle
    assert (b.image_size, b.channels, b.schedule.T) == (16, 1, 50)
    assert OutputKind.of(model).prediction is PredictionKind.V_PREDICTION
    ws = _workspace(qtbot, model)
    st = ws.state
    # x₀ at the model's size in one channel; exactly the model's ᾱ_t (diffusers' linear β, not scaled to T)
    assert (st.source_size, st.channels, st.x_0.shape) == (16, 1, (1, 16, 16))
    assert st.schedule is b.schedule and st.T == 50
    np.testing.assert_allclose(st.schedule.betas, np.linspace(1e-4, 0.02, 50), rtol=1e-12)
    assert ws.controls.findChild(QComboBox, "sourceSizeCombo").currentData() == 16
    assert ws.controls.findChild(QComboBox, "sourceChannelsCombo").currentData() == 1
    _grey(_view(ws, "sourceImageView").image_array(), 16)
    _grey(_view(ws, "forwardImageView").image_array(), 16)

    slider = ws.findChild(QSlider, "timestepSlider")
    slider.setValue(10)
    p = _wait(qtbot, ws, 10)
    assert p.x_t.shape == p.x0_pred.shape == p.eps_pred.shape == (1, 16, 16)
    out = b.denoiser(st.x_t(10)[None], np.array([10]))[0]  # the network by hand: [1, 1, 16, 16] in, v out
    x0, eps = x0_eps_from_output(b.schedule, st.x_t(10), 10, out, OutputKind.of(model))
    np.testing.assert_allclose(p.x0_pred, x0, atol=1e-5)
    np.testing.assert_allclose(p.eps_pred, eps, atol=1e-5)
    # v = √ᾱ ε − √(1−ᾱ) x₀ (Salimans & Ho): x̂₀ = √ᾱ x_t − √(1−ᾱ) v
    ab = b.schedule.alphas_cumprod[9]
    np.testing.assert_allclose(x0, np.sqrt(ab) * st.x_t(10) - np.sqrt(1 - ab) * out, atol=1e-5)
    before = _grey(_view(ws, "predictedX0View").image_array(), 16).copy()
    np.testing.assert_array_equal(before, to_uint8(x0)[..., 0])
    assert "v-prediction" in ws.modelPredictionView.formulaLabel.text()
    assert "not clipped" in ws.modelPredictionView.formulaLabel.text()  # clip_sample False
    assert ws.controls.scheduleCombo.currentText() == "Model's β 0.0001–0.02"
    _grey(_view(ws, "predictedEpsView").image_array(), 16)
    _grey(_view(ws, "trueEpsView").image_array(), 16)

    slider.setValue(45)
    _wait(qtbot, ws, 45)
    qtbot.waitUntil(lambda: not np.array_equal(_view(ws, "predictedX0View").image_array()[..., 0], before),
                    timeout=WAIT_MS)
    _grey(_view(ws, "predictedX0View").image_array(), 16)

    ws.detailTabs.setCurrentWidget(ws.findChild(QWidget, "posteriorView"))
    qtbot.waitUntil(lambda: (c := ws.posteriorView.comparison()) is not None and c.t == 45, timeout=WAIT_MS)
    c = ws.posteriorView.comparison()
    assert c.dims == 16 * 16
    for name in ("posteriorMeanView", "posteriorSampleView", "modelMeanView", "modelSampleView",
                 "meanDifferenceView"):
        _grey(_view(ws, name).image_array(), 16)
    np.testing.assert_array_equal(_view(ws, "posteriorMeanView").image_array()[..., 0], to_uint8(c.mean_q)[..., 0])

    seen = []
    ws.sendToImg2Img.connect(lambda image, strength: seen.append((image, strength)))
    ws.send_to_img2img()
    image, strength = seen[0]
    assert image.shape == (16, 16, 3) and strength == pytest.approx(45 / 50)
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
    ws.shutdown()


def test_grey_256_model_at_one_t(qtbot, diffusers_models) -> None:
    model = load_model(diffusers_models.bundle("big"), "cpu")
    ws = _workspace(qtbot, model)
    assert (ws.state.source_size, ws.state.x_0.shape, ws.state.T) == (256, (1, 256, 256), 40)
    ws.set_t(20)
    p = _wait(qtbot, ws, 20)
    assert p.x0_pred.shape == (1, 256, 256) and np.isfinite(p.x0_pred).all()
    qtbot.waitUntil(lambda: _view(ws, "predictedX0View").image_array() is not None
                    and _view(ws, "predictedX0View").image_array().shape[0] == 256, timeout=WAIT_MS)
    np.testing.assert_array_equal(_grey(_view(ws, "predictedX0View").image_array(), 256), to_uint8(p.x0_pred)[..., 0])
    _grey(_view(ws, "forwardImageView").image_array(), 256)
    ws.shutdown()


def test_the_channels_menu_makes_x0_grey(qtbot) -> None:
    ws = ForwardWorkspace()
    qtbot.addWidget(ws)
    combo = ws.findChild(QComboBox, "sourceChannelsCombo")
    combo.setCurrentIndex(combo.findData(1))
    assert ws.state.channels == 1 and ws.state.x_0.shape == (1, 64, 64)
    _grey(_view(ws, "sourceImageView").image_array(), 64)
    _grey(_view(ws, "forwardImageView").image_array(), 64)
    assert ws.controls.sourceLabel.text().endswith("pixels, grey")
    ws.controls.sizeCombo.setCurrentIndex(ws.controls.sizeCombo.findData(16))
    _grey(_view(ws, "forwardImageView").image_array(), 16)
    ws.controls.add_size(48)  # a model's size off the menu joins it in order
    sizes = [ws.controls.sizeCombo.itemData(i) for i in range(ws.controls.sizeCombo.count())]
    assert sizes == [16, 32, 48, 64, 128, 256]
    ws.shutdown()

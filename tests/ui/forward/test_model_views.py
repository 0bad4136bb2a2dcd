"""The Forward tab with the real shipped model (resources/models/shapes): x̂₀ and ε̂ for the x_t on screen,
the MSE over t, q(x_{t−1} | x_t, x₀) beside p_θ(x_{t−1} | x_t), and Send to img2img."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit, QPushButton, QSlider, QWidget

from diffusion_studio.core.images import to_uint8
from diffusion_studio.paths import default_model_dir
from diffusion_studio.ui.forward.model_probe import x0_eps_from_output
from diffusion_studio.ui.forward.workspace import ForwardWorkspace
from diffusion_studio.ui.models import LoadedModel, load_model
from diffusion_studio.ui.widgets.image_view import ImageView

WAIT_MS = 20_000


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return load_model(default_model_dir(), "cpu")


@pytest.fixture
def workspace(qtbot, model):
    """A Forward workspace on the shipped model, at its size and schedule, the model-prediction tab shown."""
    ws = ForwardWorkspace()
    qtbot.addWidget(ws)
    ws.resize(1200, 800)
    ws.show()
    ws.set_model(model)
    ws.match_model()
    ws.detailTabs.setCurrentWidget(ws.findChild(QWidget, "modelPredictionView"))
    yield ws
    ws.shutdown()


def _x0_view(ws: ForwardWorkspace) -> ImageView:
    return ws.findChild(QWidget, "modelPredictionView").findChild(ImageView, "predictedX0View")


def _wait_prediction(qtbot, ws: ForwardWorkspace, t: int, prompt: str = ""):
    views = ws.modelViews

    def arrived() -> bool:
        p = views.last_prediction()
        return p is not None and p.t == t and p.prompt == prompt

    qtbot.waitUntil(arrived, timeout=WAIT_MS)
    return views.last_prediction()


def _by_hand(model: LoadedModel, ws: ForwardWorkspace, t: int, prompt: str = "") -> tuple[np.ndarray, np.ndarray]:
    """x̂₀ and ε̂ straight from the bundle's denoiser for the workspace's x_t."""
    st = ws.state
    x_t = st.x_t(t)
    context, mask = model.bundle.text_encoder.encode([prompt])
    out = model.bundle.denoiser(x_t[None], np.array([t]), context, mask)[0]
    return x0_eps_from_output(model.bundle.schedule, x_t, t, out)


def test_moving_the_slider_changes_the_prediction(qtbot, workspace, model) -> None:
    ws = workspace
    assert ws.state.source_size == 32 and ws.state.T == 1000  # match_model: the model's size and schedule
    assert not ws.modelPredictionView.note.isVisible()
    slider = ws.findChild(QSlider, "timestepSlider")
    slider.setValue(100)
    p = _wait_prediction(qtbot, ws, 100)
    before = _x0_view(ws).image_array().copy()
    x0, eps = _by_hand(model, ws, 100)
    np.testing.assert_allclose(p.x0_pred, x0, atol=1e-5)  # the view shows this model's own answer
    np.testing.assert_array_equal(before, to_uint8(x0))
    np.testing.assert_allclose(p.mse_x0, np.mean((x0.astype(np.float64) - ws.state.x_0) ** 2), rtol=1e-5)
    np.testing.assert_allclose(p.mse_eps, np.mean((eps.astype(np.float64) - ws.state.eps) ** 2), rtol=1e-5)

    slider.setFocus()
    qtbot.keyClick(slider, Qt.Key.Key_PageUp)  # + T/20 = 50 steps
    assert ws.state.t == 150
    qtbot.waitUntil(lambda: not np.array_equal(_x0_view(ws).image_array(), before), timeout=WAIT_MS)
    assert _wait_prediction(qtbot, ws, 150).t == 150
    np.testing.assert_array_equal(_x0_view(ws).image_array(), to_uint8(_by_hand(model, ws, 150)[0]))


def test_the_error_grows_with_t(qtbot, workspace) -> None:
    ws = workspace
    ws.set_t(20)
    small = _wait_prediction(qtbot, ws, 20)
    ws.set_t(900)
    large = _wait_prediction(qtbot, ws, 900)
    assert small.mse_x0 < 0.01 < large.mse_x0  # x̂₀ is nearly x₀ at small t, a guess at large t
    assert small.mse_x0 * 20 < large.mse_x0
    qtbot.waitUntil(lambda: ws.modelPredictionView.curve() is not None, timeout=WAIT_MS)
    curve = ws.modelPredictionView.curve()
    assert curve.ts[0] == 1 and curve.ts[-1] == 1000 and len(curve.ts) == 25
    assert curve.mse_x0[0] < curve.mse_x0[len(curve.ts) // 2] < curve.mse_x0[-1]
    # the curve's points are the same computation as the single prediction
    ws.set_t(curve.ts[-1])
    at_T = _wait_prediction(qtbot, ws, curve.ts[-1])
    assert at_T.mse_x0 == pytest.approx(curve.mse_x0[-1], rel=1e-5)
    assert at_T.mse_eps == pytest.approx(curve.mse_eps[-1], rel=1e-5)


def test_the_posterior_is_ddpm_eq_7_beside_the_model(qtbot, workspace) -> None:
    ws = workspace
    ws.detailTabs.setCurrentWidget(ws.findChild(QWidget, "posteriorView"))
    ws.set_t(300)
    p = _wait_prediction(qtbot, ws, 300)
    c = ws.posteriorView.comparison()
    assert c is not None and c.t == 300
    betas = np.linspace(1e-4, 0.02, 1000)  # DDPM's linear schedule, written out
    ab = np.cumprod(1 - betas)
    beta, ab_t, ab_prev = betas[299], ab[299], ab[298]
    c1 = math.sqrt(ab_prev) * beta / (1 - ab_t)
    c2 = math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab_t)
    beta_tilde = (1 - ab_prev) / (1 - ab_t) * beta
    assert (c.coef_x0, c.coef_xt, c.beta_tilde) == (pytest.approx(c1, rel=1e-6), pytest.approx(c2, rel=1e-6),
                                                    pytest.approx(beta_tilde, rel=1e-6))
    x_0, x_t = ws.state.x_0.astype(np.float64), ws.state.x_t(300).astype(np.float64)
    np.testing.assert_allclose(c.mean_q, c1 * x_0 + c2 * x_t, atol=1e-6)
    np.testing.assert_allclose(c.mean_p, c1 * p.x0_pred + c2 * x_t, atol=1e-6)  # μ_θ = μ̃(x_t, x̂₀), eq. 11
    assert c.sigma2 == pytest.approx(beta)  # σ_t² = β_t, the DDPM sampler's default
    z_q = (c.sample_q - c.mean_q) / math.sqrt(beta_tilde)
    z_p = (c.sample_p - c.mean_p) / math.sqrt(beta)
    np.testing.assert_allclose(z_q, z_p, atol=2e-3)  # the same z for both samples
    assert c.mean_distance == pytest.approx(c1**2 * np.sum((x_0 - p.x0_pred) ** 2), rel=1e-4)
    text = ws.posteriorView.textLabel.text()
    assert f"{c1:.6g}" in text and f"{beta_tilde:.6g}" in text
    shown = ws.posteriorView.findChild(ImageView, "posteriorMeanView").image_array()
    np.testing.assert_array_equal(shown, to_uint8(c.mean_q))

    ws.posteriorView.varianceCombo.setCurrentIndex(1)  # σ_t² = β̃_t: no new model call needed
    c_small = ws.posteriorView.comparison()
    assert c_small.sigma2 == pytest.approx(beta_tilde, rel=1e-6)
    assert c_small.kl_per_dim == pytest.approx(c.mean_distance / (2 * beta_tilde * c.dims), rel=1e-5)


def test_a_prompt_changes_the_prediction(qtbot, workspace, model) -> None:
    ws = workspace
    ws.set_t(600)
    uncond = _wait_prediction(qtbot, ws, 600)
    edit = ws.findChild(QLineEdit, "forwardPromptEdit")
    assert edit.isEnabled()
    edit.setText("a red circle")
    cond = _wait_prediction(qtbot, ws, 600, "a red circle")
    assert np.abs(cond.x0_pred - uncond.x0_pred).max() > 0.05
    np.testing.assert_allclose(cond.x0_pred, _by_hand(model, ws, 600, "a red circle")[0], atol=1e-5)
    assert "a red circle" in ws.modelPredictionView.statsLabel.text()


def test_latest_wins_while_the_model_is_busy(qtbot, model) -> None:
    """While one call runs, 59 more timesteps are asked for: only the newest is computed next."""
    import threading
    from types import SimpleNamespace

    from diffusion_studio.ui.forward.model_probe import Inputs, ModelProbe
    from diffusion_studio.ui.forward.state import ForwardState

    gate, calls = threading.Event(), []

    def held_denoiser(x, t, context, mask):  # the real U-Net, held at its first call until the gate opens
        calls.append([int(v) for v in t])
        gate.wait(10)
        return model.bundle.denoiser(x, t, context, mask)

    held = SimpleNamespace(name=model.name, conditioning="text", pipeline=model.pipeline,
                           bundle=SimpleNamespace(denoiser=held_denoiser, text_encoder=model.bundle.text_encoder,
                                                  spec=model.bundle.spec))
    state = ForwardState()
    state.set_source_size(32)
    inputs = Inputs(1, held, model.bundle.schedule, state.x_0, state.eps, "")
    probe = ModelProbe()
    seen: list[int] = []
    probe.predicted.connect(lambda p: seen.append(p.t))
    probe.request(inputs, 1)
    qtbot.waitUntil(lambda: len(calls) == 1, timeout=WAIT_MS)  # the worker is inside the first call
    for t in range(2, 61):
        probe.request(inputs, t)
    gate.set()
    qtbot.waitUntil(lambda: len(seen) == 2 and not probe.busy(), timeout=WAIT_MS)
    qtbot.wait(100)
    assert calls == [[1], [60]] and seen == [1, 60]
    assert probe.shutdown()


def test_notes_without_a_model_and_at_another_size(qtbot, model) -> None:
    ws = ForwardWorkspace()
    qtbot.addWidget(ws)
    ws.resize(1000, 700)
    ws.show()
    ws.detailTabs.setCurrentWidget(ws.modelPredictionView)
    note = ws.modelPredictionView.note
    assert note.isVisible() and note.label.text().startswith("No model is loaded")
    assert _x0_view(ws).image_array() is None and not ws.modelViews.busy()
    ws.set_model(model)  # the source is 64 × 64, the model makes 32 × 32
    assert "32 × 32" in note.label.text() and "64 × 64" in note.label.text()
    button = ws.findChild(QPushButton, "modelPredictionNoteButton")
    assert button.isVisible() and button.text() == "Use 32 × 32"
    assert not ws.modelViews.busy()  # nothing is asked while the model cannot answer
    ws.set_schedule("cosine")
    assert "linear schedule, T = 1000" in note.label.text() and button.text() == "Use 32 × 32 and the model's schedule"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert ws.state.source_size == 32 and ws.state.kind.value == "linear" and not note.isVisible()
    _wait_prediction(qtbot, ws, ws.state.t)
    ws.set_model(None, "The default model is not installed.")
    assert note.isVisible() and note.label.text() == "The default model is not installed."
    assert _x0_view(ws).image_array() is None
    ws.shutdown()


def test_send_to_img2img_emits_x0_and_t_over_T(qtbot) -> None:
    ws = ForwardWorkspace()
    qtbot.addWidget(ws)
    ws.set_schedule("linear", 500)
    ws.set_t(125)
    button = ws.findChild(QPushButton, "sendToImg2ImgButton")
    with qtbot.waitSignal(ws.sendToImg2Img, timeout=1000) as blocker:
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    image, strength = blocker.args
    assert strength == pytest.approx(0.25)
    assert image.dtype == np.float32 and image.shape == (64, 64, 3)
    np.testing.assert_array_equal(image, np.moveaxis(ws.state.x_0, 0, -1))
    np.testing.assert_array_equal(to_uint8(np.moveaxis(image, -1, 0)), ws.state.source)


def test_the_window_sends_x0_to_the_generate_tab(qtbot) -> None:
    from diffusion_studio.ui import MainWindow

    window = MainWindow(model_path=str(default_model_dir()))
    qtbot.addWidget(window)
    forward = window.forwardWorkspace
    window.tabs.setCurrentWidget(forward)
    forward.set_t(400)
    qtbot.mouseClick(forward.findChild(QPushButton, "sendToImg2ImgButton"), Qt.MouseButton.LeftButton)
    generate = window.generateWorkspace
    assert window.tabs.currentWidget() is generate
    init = generate.state.init_image
    assert init is not None and init.source == "forward process"
    assert generate.state.settings.strength == pytest.approx(0.4)
    np.testing.assert_array_equal(np.asarray(init.image.convert("RGB")), forward.state.source)
    window.close()


def test_every_prediction_kind_goes_through_one_function() -> None:
    from diffusion_studio.core.prediction import PredictionKind
    from diffusion_studio.core.schedule import make_schedule
    from diffusion_studio.ui.forward.model_probe import OutputKind

    schedule = make_schedule("linear", 1000)
    rng = np.random.default_rng(0)
    x_0 = rng.uniform(-0.9, 0.9, (3, 8, 8)).astype(np.float32)
    eps = rng.standard_normal((3, 8, 8)).astype(np.float32)
    t = 350
    a, b = math.sqrt(schedule.alphas_cumprod[t - 1]), math.sqrt(1 - schedule.alphas_cumprod[t - 1])
    x_t = (a * x_0 + b * eps).astype(np.float32)
    outputs = {PredictionKind.EPSILON: eps, PredictionKind.V_PREDICTION: a * eps - b * x_0,
               PredictionKind.SAMPLE: x_0}
    for kind, output in outputs.items():  # a perfect model of each kind gives back x_0 and ε
        x0_hat, eps_hat = x0_eps_from_output(schedule, x_t, t, np.asarray(output, np.float32), OutputKind(kind))
        np.testing.assert_allclose(x0_hat, x_0, atol=1e-5, err_msg=kind.value)
        np.testing.assert_allclose(eps_hat, eps, atol=1e-5, err_msg=kind.value)
    far = np.full((3, 8, 8), 40.0, np.float32)  # ε̂ that puts x̂_0 far outside [−1, 1]
    assert x0_eps_from_output(schedule, x_t, t, far)[0].min() == -1.0  # clipped like the samplers
    assert x0_eps_from_output(schedule, x_t, t, far, OutputKind(clip_range=None))[0].min() < -10


def test_a_schedule_off_the_menu_is_adopted_exactly(qtbot) -> None:
    from types import SimpleNamespace

    from diffusion_studio.core.schedule import make_schedule

    ws = ForwardWorkspace()
    qtbot.addWidget(ws)
    own = make_schedule("linear", 1000, beta_start=0.00085, beta_end=0.012)
    bundle = SimpleNamespace(channels=3, image_size=64, spec=SimpleNamespace(diffusion=SimpleNamespace()),
                             schedule=own)
    ws.set_model(SimpleNamespace(name="other-betas", bundle=bundle, conditioning="text"))
    note = ws.modelPredictionView.note
    assert "β from 0.00085 to 0.012" in note.label.text() and note.button.text() == "Use the model's schedule"
    qtbot.mouseClick(note.button, Qt.MouseButton.LeftButton)  # the menu gains "The model's" entry
    assert ws.state.schedule is own and note.isHidden()
    assert ws.controls.scheduleCombo.currentData() == "model" and "0.00085" in ws.controls.scheduleCombo.currentText()
    ws.controls.stepsSpin.setValue(500)  # the model's kind and β ends at another T
    np.testing.assert_allclose(ws.state.schedule.betas, np.linspace(0.00085, 0.012, 500), rtol=1e-12)
    ws.set_schedule("linear", 1000)  # back to DDPM's
    assert "0.00085" in note.label.text()
    bundle.schedule = make_schedule("cosine", 500)  # one the menu makes: offered
    ws.modelViews.refresh()
    assert "cosine schedule, T = 500" in note.label.text() and note.button.text() == "Use the model's schedule"
    qtbot.mouseClick(note.button, Qt.MouseButton.LeftButton)
    assert (ws.state.kind.value, ws.state.T) == ("cosine", 500) and note.isHidden()
    ws.set_model(None)

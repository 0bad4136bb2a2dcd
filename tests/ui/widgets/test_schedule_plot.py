"""`schedulePlot`: the curves are the core's schedule arrays, the marks are the core's timesteps,
and what it draws lands where its axes say (pixels of a real grab)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QMouseEvent, QPalette
from PySide6.QtWidgets import QApplication, QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox

from diffusion_studio.core.params import DEFAULT_SAMPLER, DEFAULT_STEPS
from diffusion_studio.core.sampler_steps import make_timesteps
from diffusion_studio.core.sampling_loop import img2img_timesteps
from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.ui.widgets.plotting import series_color
from diffusion_studio.ui.widgets.schedule_plot import SchedulePlot


def _near(image, point: tuple[float, float], color: QColor, radius: int = 2, tol: int = 40) -> bool:
    """Is a pixel within `radius` of `point` (x, y) close to `color`?"""
    x, y = point
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            px = image.pixelColor(int(round(x)) + dx, int(round(y)) + dy)
            if max(abs(px.red() - color.red()), abs(px.green() - color.green()),
                   abs(px.blue() - color.blue())) < tol:
                return True
    return False


@pytest.fixture
def make_plot(qtbot):
    def make(kind: str = "linear", T: int = 1000, t: int = 250) -> SchedulePlot:
        plot = SchedulePlot(make_schedule(kind, T), t)
        qtbot.addWidget(plot)
        plot.resize(760, 380)
        plot.show()
        qtbot.waitExposed(plot)
        assert plot.objectName() == "schedulePlot"
        return plot

    return make


def test_curves_are_the_schedules_arrays_in_both_views(make_plot) -> None:
    plot = make_plot("linear", 1000)
    t = np.arange(1, 1001)
    for kind in ("linear", "cosine"):
        x, y = plot.curve_data(kind)
        np.testing.assert_array_equal(x, t)
        np.testing.assert_array_equal(y, make_schedule(kind, 1000).alphas_cumprod)
    assert plot.curve_data("model")[0].size == 0  # no model: no model curve
    check = plot.findChild(QCheckBox, "scheduleLogSnrCheck")
    check.click()
    assert plot.log_snr()
    for kind in ("linear", "cosine"):
        ab = make_schedule(kind, 1000).alphas_cumprod
        _, y = plot.curve_data(kind)
        np.testing.assert_allclose(y, np.log(ab / (1 - ab)), rtol=1e-12)  # λ_t = log(ᾱ_t / (1 − ᾱ_t))
    assert plot.curve_data("linear")[1][0] == pytest.approx(np.log(0.9999 / 0.0001))  # β_1 = 1e-4
    _, marks = plot.visited_data()
    np.testing.assert_allclose(marks, plot.curve_data("linear")[1][plot.visited_timesteps() - 1])
    check.click()
    np.testing.assert_array_equal(plot.curve_data("linear")[1], make_schedule("linear", 1000).alphas_cumprod)


def test_visited_timesteps_are_the_cores_and_follow_the_controls(make_plot) -> None:
    plot = make_plot("linear", 1000)
    steps_spin = plot.findChild(QSpinBox, "scheduleStepsSpin")
    sampler = plot.findChild(QComboBox, "scheduleSamplerCombo")
    assert steps_spin.value() == DEFAULT_STEPS and sampler.currentData() == DEFAULT_SAMPLER.value
    np.testing.assert_array_equal(plot.visited_timesteps(), make_timesteps(1000, DEFAULT_STEPS))
    before = plot.visited_timesteps()
    steps_spin.setValue(7)
    visited = plot.visited_timesteps()
    np.testing.assert_array_equal(visited, make_timesteps(1000, 7))
    assert visited.tolist() == [1000, 834, 667, 500, 334, 168, 1]  # linspace, rounded half to even
    assert len(visited) != len(before)
    x, y = plot.visited_data()  # the marks sit on the curve in use at those t
    np.testing.assert_array_equal(x, visited)
    np.testing.assert_array_equal(y, make_schedule("linear", 1000).alphas_cumprod[visited - 1])
    plot.findChild(QDoubleSpinBox, "scheduleStrengthSpin").setValue(0.5)  # img2img: starts at t = 500
    np.testing.assert_array_equal(plot.visited_timesteps(), img2img_timesteps(1000, 7, 0.5))
    assert plot.visited_timesteps()[0] == 500
    sampler.setCurrentIndex(sampler.findData("ddim"))
    assert plot.sampler() == "ddim" and "DDIM: 4 steps" in plot.legend.getLabel(plot.visitedItem).text
    # Another schedule: steps are bounded by its T, marks and t follow it.
    steps_spin.setValue(80)
    plot.set_schedule(make_schedule("cosine", 50))
    assert steps_spin.maximum() == 50 and steps_spin.value() == 50 and plot.t() == 50
    np.testing.assert_array_equal(plot.visited_timesteps(), img2img_timesteps(50, 50, 0.5))
    np.testing.assert_array_equal(plot.curve_data("cosine")[1], make_schedule("cosine", 50).alphas_cumprod)


def test_the_models_schedule_is_drawn_when_it_differs(make_plot) -> None:
    plot = make_plot("linear", 1000)
    plot.set_model_schedule(make_schedule("cosine", 1000), "shapes")
    assert plot.curve_data("model")[0].size == 0  # same T: it is the cosine curve, named so
    assert "shapes" in plot.legend.getLabel(plot.curves[make_schedule("cosine", 2).kind]).text
    model = make_schedule("cosine", 400)
    plot.set_model_schedule(model, "shapes")
    x, y = plot.curve_data("model")
    np.testing.assert_array_equal(x, np.arange(1, 401))
    np.testing.assert_array_equal(y, model.alphas_cumprod)
    assert "T = 400" in plot.legend.getLabel(plot.curves["model"]).text
    other_ends = make_schedule("linear", 1000, beta_start=1e-4, beta_end=0.012)  # same kind and T, other β
    plot.set_model_schedule(other_ends, "wide")
    np.testing.assert_array_equal(plot.curve_data("model")[1], other_ends.alphas_cumprod)
    plot.set_model_schedule(None)
    assert plot.curve_data("model")[0].size == 0 and plot.legend.getLabel(plot.curves["model"]) is None


def test_a_scaled_linear_schedule_in_use_is_drawn_with_the_two_overlays(make_plot) -> None:
    plot = make_plot("linear", 1000)
    scaled = make_schedule("scaled_linear", 200)
    plot.set_schedule(scaled)
    for kind in ("linear", "cosine", "scaled_linear"):
        np.testing.assert_array_equal(plot.curve_data(kind)[1], make_schedule(kind, 200).alphas_cumprod)
    assert "(in use)" in plot.legend.getLabel(plot.curves[scaled.kind]).text
    np.testing.assert_array_equal(plot.visited_data()[1], scaled.alphas_cumprod[plot.visited_timesteps() - 1])
    plot.set_schedule(make_schedule("cosine", 200))
    assert plot.curve_data("scaled_linear")[0].size == 0


def test_the_grab_shows_curves_marks_and_t_where_the_axes_say(make_plot, qtbot) -> None:
    plot = make_plot("linear", 1000, t=250)
    plot.findChild(QSpinBox, "scheduleStepsSpin").setValue(5)
    qtbot.wait(20)
    plot.hover.hide()  # a mouse left over the plot by an earlier test would show the hover readout
    image = plot.grab().toImage()
    palette = plot.palette()
    s_lin, s_cos = make_schedule("linear", 1000), make_schedule("cosine", 1000)
    for t in (120, 640, 880):  # away from the marks, the t line and the legend
        assert _near(image, plot.data_to_pixel(t, s_lin.alphas_cumprod[t - 1]), series_color(palette, 0)), t
        assert _near(image, plot.data_to_pixel(t, s_cos.alphas_cumprod[t - 1]), series_color(palette, 1)), t
    for t in plot.visited_timesteps()[1:-1]:  # [1000, 750, 500, 251, 1]: the inner marks
        if abs(t - 250) > 5:  # (the current-t dot covers that one)
            assert _near(image, plot.data_to_pixel(t, s_lin.alphas_cumprod[t - 1]), series_color(palette, 3)), t
    base = palette.color(QPalette.ColorRole.Base)
    x, y = plot.data_to_pixel(880, 0.87)  # empty upper right, between grid lines: the background
    assert _near(image, (x, y), base, radius=0, tol=20)
    assert not any(_near(image, (x, y), series_color(palette, i), radius=3) for i in range(4))
    x250 = plot.marker_x()
    assert abs(x250 - plot.data_to_pixel(250, 0.5)[0]) < 1e-6
    _, y_mid = plot.data_to_pixel(250, 0.3)
    assert _near(image, (x250, y_mid), palette.color(QPalette.ColorRole.Text), radius=1, tol=90)  # the t line
    plot.set_t(700)
    assert plot.t() == 700 and plot.marker_x() > x250 and plot.tLine.value() == 700


def test_hover_shows_the_values_under_the_mouse(make_plot, qtbot) -> None:
    plot = make_plot("linear", 1000)
    x, y = plot.data_to_pixel(412, 0.5)
    view = plot.graph.viewport()
    pos = QPointF(view.mapFrom(plot, QPoint(int(round(x)), int(round(y)))))
    move = QMouseEvent(QEvent.Type.MouseMove, pos, QPointF(view.mapToGlobal(pos)), Qt.MouseButton.NoButton,
                       Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view, move)  # as the mouse would; handled at once (sendEvent is synchronous)
    lines = plot.hover.text.splitlines()
    t = int(lines[0].removeprefix("t = "))
    assert abs(t - 412) <= 2
    assert lines[1] == f"linear ᾱ = {make_schedule('linear', 1000).alphas_cumprod[t - 1]:.4g}"
    assert lines[2] == f"cosine ᾱ = {make_schedule('cosine', 1000).alphas_cumprod[t - 1]:.4g}"
    assert plot.hover.label.isVisible() and plot.hover.line.value() == t
    assert plot.hover.show_at(plot.visited_timesteps()[3]).endswith(f"step 4 of {DEFAULT_STEPS}")
    QApplication.sendEvent(plot, QEvent(QEvent.Type.Leave))  # the mouse left the plot
    assert plot.hover.text == "" and not plot.hover.label.isVisible()


def test_export_is_in_the_context_menu_and_writes_the_curves(make_plot, tmp_path) -> None:
    import pyqtgraph.exporters

    plot = make_plot("linear", 100)
    scene = plot.graph.scene()
    labels = [action.text() for action in scene.contextMenu]
    assert any(label.startswith("Export") for label in labels)
    assert plot.plotItem.getViewBox().menu is not None  # pyqtgraph's own pan/zoom menu as well
    # what the menu's dialog runs: CSV of the curves, PNG of the plot
    pyqtgraph.exporters.CSVExporter(plot.plotItem).export(str(tmp_path / "schedule.csv"))
    table = np.genfromtxt(tmp_path / "schedule.csv", delimiter=",", skip_header=1)  # 10 decimals
    np.testing.assert_array_equal(table[:, 0], np.arange(1, 101))
    np.testing.assert_allclose(table[:, 1], make_schedule("linear", 100).alphas_cumprod, rtol=0, atol=1e-10)
    np.testing.assert_allclose(table[:, 3], make_schedule("cosine", 100).alphas_cumprod, rtol=0, atol=1e-10)
    pyqtgraph.exporters.ImageExporter(plot.plotItem).export(str(tmp_path / "schedule.png"))
    assert (tmp_path / "schedule.png").read_bytes().startswith(b"\x89PNG")


def test_dark_palette_restyles_the_plot(make_plot, qtbot) -> None:
    plot = make_plot()
    palette = QPalette(plot.palette())
    for role, rgb in ((QPalette.ColorRole.Base, (30, 30, 32)), (QPalette.ColorRole.Text, (230, 230, 230)),
                      (QPalette.ColorRole.Window, (45, 45, 48)), (QPalette.ColorRole.WindowText, (230, 230, 230))):
        palette.setColor(role, QColor(*rgb))
    plot.setPalette(palette)
    qtbot.wait(20)
    image = plot.grab().toImage()
    x, y = plot.data_to_pixel(880, 0.85)
    assert _near(image, (x, y), QColor(30, 30, 32), radius=0, tol=20)  # no pyqtgraph black, no light base
    assert image.pixelColor(2, image.height() - 2) == QColor(30, 30, 32)
    s = make_schedule("linear", 1000)
    assert _near(image, plot.data_to_pixel(640, s.alphas_cumprod[639]), series_color(palette, 0))
    assert plot.hover.label.color == QColor(230, 230, 230)


def test_follows_the_generate_form_and_the_loaded_model(make_plot, tmp_path) -> None:
    from diffusion_studio.ui.generate.history import HistoryStore
    from diffusion_studio.ui.generate.state import GenerateState

    plot = make_plot("linear", 1000)
    state = GenerateState(HistoryStore(tmp_path / "history"))
    state.update(sampler="ddpm", steps=12)
    plot.follow(state)
    assert plot.sampler() == "ddpm"
    np.testing.assert_array_equal(plot.visited_timesteps(), make_timesteps(1000, 12))
    state.update(steps=30, strength=0.4)  # no init image: the strength is not used
    np.testing.assert_array_equal(plot.visited_timesteps(), make_timesteps(1000, 30))
    model = SimpleNamespace(name="tiny", bundle=SimpleNamespace(schedule=make_schedule("cosine", 50)))
    state.set_model(model)  # type: ignore[arg-type]
    np.testing.assert_array_equal(plot.curve_data("model")[1], make_schedule("cosine", 50).alphas_cumprod)
    state.set_model(None)
    assert plot.curve_data("model")[0].size == 0


def test_the_window_wires_the_forward_schedule_plot_to_the_generate_form(make_window) -> None:
    window = make_window()  # the tiny bundle: linear, T = 50; the Forward tab starts at linear, T = 1000
    plot = window.forwardWorkspace.schedulePlot
    window.generateWorkspace.state.update(sampler="ddim", steps=7)
    assert plot.sampler() == "ddim"
    np.testing.assert_array_equal(plot.visited_timesteps(), make_timesteps(1000, 7))
    model_schedule = window.model().bundle.schedule
    np.testing.assert_array_equal(plot.curve_data("model")[1], model_schedule.alphas_cumprod)
    assert plot.curve_data("model")[0].size == model_schedule.T == 50

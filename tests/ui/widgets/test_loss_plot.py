"""`lossPlot`: the points it holds are the ones given, and they land where its axes say (pixels
of a real grab), in linear and log scale; the bucket bars scale with their loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QColor, QMouseEvent, QPalette
from PySide6.QtWidgets import QApplication

from diffusion_studio.ui.widgets.loss_plot import PLACEHOLDER, LossPlot
from diffusion_studio.ui.widgets.plotting import series_color


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
def plot(qtbot) -> LossPlot:
    widget = LossPlot()
    qtbot.addWidget(widget)
    widget.resize(600, 420)
    widget.show()
    qtbot.waitExposed(widget)
    assert widget.objectName() == "lossPlot"
    return widget


LOSSES = [(10 * i, 1.0 / i) for i in range(1, 9)]


def test_loss_points_appear_where_the_axes_put_them_in_both_scales(plot, qtbot) -> None:
    assert plot.points() == [] and plot.curve_data()[0].size == 0
    assert plot.lossItem.titleLabel.text.endswith(PLACEHOLDER)
    for step, loss in LOSSES:
        plot.add_point(step, loss)
    plot.add_point(90, math.nan)  # ignored
    assert plot.points() == LOSSES
    steps, values = plot.curve_data()
    np.testing.assert_array_equal(steps, [s for s, _ in LOSSES])
    np.testing.assert_array_equal(values, [v for _, v in LOSSES])
    assert "step 80: 0.1250" in plot.lossItem.titleLabel.text
    color = series_color(plot.palette(), 0)
    pixels = {}
    for log_scale in (False, True):
        plot.set_log_scale(log_scale)
        assert plot.log_scale() is log_scale
        qtbot.wait(20)
        _, shown = plot.lossCurve.getData()  # what pyqtgraph draws: log10 of the loss on a log axis
        np.testing.assert_allclose(shown, np.log10(values) if log_scale else values)
        assert ("(log scale)" in plot.lossItem.titleLabel.text) is log_scale
        image = plot.grab().toImage()
        for step, loss in LOSSES:
            assert _near(image, plot.data_to_pixel(plot.lossItem, step, loss), color), (log_scale, step)
        # a point the curve does not pass through stays background
        assert not _near(image, plot.data_to_pixel(plot.lossItem, 75, 0.95), color, radius=1)
        pixels[log_scale] = [plot.data_to_pixel(plot.lossItem, 40, v)[1] for v in (1.0, 0.5, 0.125)]
    for ys in pixels.values():
        assert ys[0] < ys[1] < ys[2]  # higher loss is higher up
    lin, log = pixels[False], pixels[True]
    # linear: 1 → 0.5 is 4/7 of 1 → 0.125; log: it is one decade-third, 1/3 of the way
    assert (lin[1] - lin[0]) / (lin[2] - lin[0]) == pytest.approx(4 / 7, abs=0.01)
    assert (log[1] - log[0]) / (log[2] - log[0]) == pytest.approx(1 / 3, abs=0.01)


def test_set_points_and_clear(plot) -> None:
    plot.set_points([(1, 0.5), (2, math.inf), (3, 0.25)])
    assert plot.points() == [(1, 0.5), (3, 0.25)]
    np.testing.assert_array_equal(plot.curve_data()[1], [0.5, 0.25])
    plot.set_bucket_loss([0.1, None])
    plot.clear()
    assert plot.points() == [] and plot.bucket_loss() == [] and plot.curve_data()[0].size == 0
    assert plot.bar_data()[1].size == 0
    assert plot.lossItem.titleLabel.text.endswith(PLACEHOLDER)


def test_bucket_bars_scale_with_their_loss(plot, qtbot) -> None:
    plot.add_point(1, 1.0)
    buckets = [None, 1.0, 0.5, 0.25, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05]
    plot.set_bucket_loss(buckets)
    assert plot.bucket_loss() == buckets
    x0, heights = plot.bar_data()
    np.testing.assert_allclose(heights, [v for v in buckets if v is not None])
    np.testing.assert_allclose(x0, [(i + 0.15) / 10 for i in range(1, 10)])  # bucket b from b/10
    qtbot.wait(20)
    image = plot.grab().toImage()
    color = series_color(plot.palette(), 1)

    def bar_pixels(i: int) -> int:
        x, top = plot.data_to_pixel(plot.bucketItem, (i + 0.5) / 10, 1.1)
        _, bottom = plot.data_to_pixel(plot.bucketItem, (i + 0.5) / 10, 0.0)
        return sum(1 for y in range(int(top), int(bottom)) if _near(image, (x, y), color, radius=0))

    heights_px = [bar_pixels(i) for i in range(10)]
    full = plot.data_to_pixel(plot.bucketItem, 0, 0.0)[1] - plot.data_to_pixel(plot.bucketItem, 0, 1.0)[1]
    assert heights_px[0] == 0  # an empty bucket has no bar
    assert heights_px[1] == pytest.approx(full, abs=3)
    assert heights_px[2] == pytest.approx(full / 2, abs=3)
    assert heights_px[3] == pytest.approx(full / 4, abs=3)


def test_hover_reads_the_nearest_point(plot) -> None:
    plot.set_points(LOSSES)
    x, y = plot.data_to_pixel(plot.lossItem, 31, 0.6)
    view = plot.viewport()
    pos = QPointF(x, y)
    move = QMouseEvent(QEvent.Type.MouseMove, pos, QPointF(view.mapToGlobal(pos)), Qt.MouseButton.NoButton,
                       Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view, move)
    assert plot.lossHover.text == "step 30\nloss 0.33333"
    assert plot.lossHover.dot.getData()[1][0] == pytest.approx(1 / 3)
    QApplication.sendEvent(plot, QEvent(QEvent.Type.Leave))  # the mouse left the plot
    assert plot.lossHover.text == "" and not plot.lossHover.label.isVisible()
    plot.set_bucket_loss([0.2, None])
    assert plot.bucketHover.show_at(0.7) == "t/T ∈ (0.5, 1]\nno loss yet"
    assert plot.bucketHover.show_at(0.2) == "t/T ∈ (0, 0.5]\nloss 0.2"


def test_export_menu_and_palette(plot, qtbot) -> None:
    assert any(action.text().startswith("Export") for action in plot.scene().contextMenu)
    plot.set_points(LOSSES)
    palette = QPalette(plot.palette())
    for role, rgb in ((QPalette.ColorRole.Base, (30, 30, 32)), (QPalette.ColorRole.Text, (230, 230, 230))):
        palette.setColor(role, QColor(*rgb))
    plot.setPalette(palette)
    qtbot.wait(20)
    image = plot.grab().toImage()
    assert image.pixelColor(3, 3) == QColor(30, 30, 32)
    assert _near(image, plot.data_to_pixel(plot.lossItem, 40, 0.25), series_color(palette, 0))

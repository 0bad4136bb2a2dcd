"""`lossPlot` and the schedule plot: what they draw lands where their axes say."""

from __future__ import annotations

import math

import pytest
from PySide6.QtCore import QRectF
from PySide6.QtGui import QColor, QPalette

from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.ui.widgets.loss_plot import LossPlot
from diffusion_studio.ui.widgets.plotting import Axes, log_ticks, nice_ticks, series_color
from diffusion_studio.ui.widgets.schedule_plot import SchedulePlot


def _near(image, x: float, y: float, color: QColor, radius: int = 2) -> bool:
    """Is a pixel within `radius` of (x, y) close to `color`?"""
    for dx in range(-radius, radius + 1):
        for dy in range(-radius, radius + 1):
            px = image.pixelColor(int(round(x)) + dx, int(round(y)) + dy)
            if max(abs(px.red() - color.red()), abs(px.green() - color.green()),
                   abs(px.blue() - color.blue())) < 40:
                return True
    return False


def test_nice_and_log_ticks() -> None:
    assert nice_ticks(0, 1, 4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(0.013, 0.071, 4) == [0.02, 0.04, 0.06]
    assert nice_ticks(1, 1000, 5) == [200, 400, 600, 800, 1000]
    assert log_ticks(0.05, 2) == pytest.approx([0.05, 0.1, 0.2, 0.5, 1, 2])
    assert log_ticks(0.01, 2) == pytest.approx([0.01, 0.1, 1])
    assert log_ticks(1e-4, 10) == [1e-4, 1e-3, 1e-2, 1e-1, 1, 10]
    axes = Axes(QRectF(0, 0, 100, 100), x0=0, x1=10, y0=0.01, y1=1, log_y=True)
    assert axes.py(0.1) == pytest.approx(50.0) and axes.px(5) == pytest.approx(50.0)


def test_loss_points_are_drawn_where_the_axes_put_them(qtbot) -> None:
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(600, 400)
    assert plot.points() == [] and plot.loss_axes() is None
    losses = [(10 * i, 1.0 / i) for i in range(1, 9)]
    for step, loss in losses:
        plot.add_point(step, loss)
    plot.add_point(90, math.nan)  # ignored
    assert plot.points() == losses
    color = series_color(plot.palette(), 0)
    for log_scale in (False, True):
        plot.set_log_scale(log_scale)
        axes = plot.loss_axes()
        assert axes is not None and axes.log_y is log_scale
        image = plot.grab().toImage()
        for step, loss in losses:
            assert _near(image, axes.px(step), axes.py(loss), color), (log_scale, step)
        # a point the curve does not pass through stays background
        assert not _near(image, axes.px(75), axes.py(0.95), color, radius=1)
    axes = plot.loss_axes()
    assert axes.py(1.0) < axes.py(0.5) < axes.py(0.125)  # higher loss is higher up


def test_bucket_bars_scale_with_their_loss(qtbot) -> None:
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(600, 400)
    plot.add_point(1, 1.0)
    plot.set_bucket_loss([None, 1.0, 0.5, 0.25, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05])
    _, bars = plot._layout()
    image = plot.grab().toImage()
    color = series_color(plot.palette(), 1)
    slot = bars.width() / 10

    def bar_height(i: int) -> int:
        x = int(bars.left() + (i + 0.5) * slot)
        return sum(1 for y in range(int(bars.top()), int(bars.bottom()))
                   if _near(image, x, y, color, radius=0))

    heights = [bar_height(i) for i in range(10)]
    assert heights[0] == 0  # an empty bucket has no bar
    assert heights[1] == pytest.approx(bars.height() / 1.1, abs=3)
    assert heights[2] == pytest.approx(heights[1] / 2, abs=3)
    assert heights[3] == pytest.approx(heights[1] / 4, abs=3)


def test_schedule_plot_marks_the_current_t(qtbot) -> None:
    schedule = make_schedule("linear", 1000)
    plot = SchedulePlot(schedule, 250)
    qtbot.addWidget(plot)
    plot.resize(500, 260)
    axes = plot._axes()
    image = plot.grab().toImage()
    palette = plot.palette()
    for i, attr in enumerate(("alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")):
        value = float(getattr(schedule, attr)[249])
        assert _near(image, axes.px(250), axes.py(value), series_color(palette, i)), attr
        value_end = float(getattr(schedule, attr)[899])
        assert _near(image, axes.px(900), axes.py(value_end), series_color(palette, i)), attr
    x250 = plot.marker_x()
    plot.set_schedule(make_schedule("cosine", 100))
    assert plot.t() == 100 and plot.marker_x() > x250  # clamped to the new T, at the right end
    assert palette.color(QPalette.ColorRole.Base).isValid()

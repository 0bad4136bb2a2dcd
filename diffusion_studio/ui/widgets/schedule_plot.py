"""`SchedulePlot`: ᾱ_t, √ᾱ_t and √(1−ᾱ_t) over t ∈ [1, T], with a marker at the current t."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QFontMetricsF, QPainter, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from diffusion_studio.core.schedule import Schedule
from diffusion_studio.ui.widgets.plotting import (
    Axes,
    draw_frame,
    draw_legend,
    legend_entry_width,
    nice_ticks,
    polylines,
    series_color,
)

# (label, Schedule attribute) of each curve, in drawing order.
CURVES: tuple[tuple[str, str], ...] = (
    ("ᾱ_t", "alphas_cumprod"),
    ("√ᾱ_t (× x₀)", "sqrt_alphas_cumprod"),
    ("√(1−ᾱ_t) (× ε)", "sqrt_one_minus_alphas_cumprod"),
)
MAX_POINTS = 600  # curves are drawn through at most this many samples of t


class SchedulePlot(QWidget):
    def __init__(self, schedule: Schedule, t: int = 1, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("schedulePlot")
        self.setAccessibleName("Noise schedule plot")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(200, 160)
        self._schedule = schedule
        self._t = t

    def set_schedule(self, schedule: Schedule) -> None:
        self._schedule = schedule
        self._t = min(self._t, schedule.T)
        self.update()

    def set_t(self, t: int) -> None:
        self._t = int(t)
        self.update()

    def t(self) -> int:
        return self._t

    def marker_x(self) -> float:
        """Pixel x of the current-t marker (for tests and hit checks)."""
        return self._axes().px(self._t)

    def legend_rows(self) -> list[list[str]]:
        """The legend's labels in rows that fit the widget's width (one row when there is room)."""
        metrics = QFontMetricsF(self.font())
        left = metrics.horizontalAdvance("0.00") + 12
        width = self.width() - left - 4
        rows: list[list[str]] = [[]]
        x = 0.0
        for label, _attr in CURVES:
            w = legend_entry_width(metrics, label)
            if rows[-1] and x + w > width:
                rows.append([])
                x = 0.0
            rows[-1].append(label)
            x += w
        return rows

    def legend_width(self) -> float:
        """The widest legend row, in pixels, from the plot's left axis."""
        metrics = QFontMetricsF(self.font())
        return max(sum(legend_entry_width(metrics, label) for label in row) for row in self.legend_rows())

    def _axes(self) -> Axes:
        metrics = QFontMetricsF(self.font())
        left = metrics.horizontalAdvance("0.00") + 12
        bottom = metrics.height() + 8
        top = metrics.height() * len(self.legend_rows()) + 8
        right = metrics.horizontalAdvance("1000") / 2 + 8
        rect = QRectF(left, top, max(10.0, self.width() - left - right), max(10.0, self.height() - top - bottom))
        return Axes(rect, 1.0, float(max(2, self._schedule.T)), 0.0, 1.0)

    def sizeHint(self) -> QSize:
        return QSize(420, 220)

    def paintEvent(self, event: object) -> None:
        painter = QPainter(self)
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            palette = self.palette()
            painter.fillRect(self.rect(), palette.color(QPalette.ColorRole.Base))
            s = self._schedule
            axes = self._axes()
            draw_frame(painter, axes, palette, nice_ticks(1, s.T, 5), [0.0, 0.25, 0.5, 0.75, 1.0],
                       fmt_x=lambda v: f"{v:g}")
            ts = np.unique(np.linspace(1, s.T, min(s.T, MAX_POINTS)).round().astype(int))
            painter.save()
            painter.setClipRect(axes.rect.adjusted(-2, -2, 2, 2))
            entries = []
            for i, (label, attr) in enumerate(CURVES):
                color = series_color(palette, i)
                values = np.asarray(getattr(s, attr))[ts - 1]
                painter.setPen(QPen(color, 2.0))
                painter.setBrush(Qt.BrushStyle.NoBrush)
                for line in polylines(axes, ts.tolist(), values.tolist()):
                    painter.drawPolyline(line)
                entries.append((label, color))
            # The current t: a vertical line and a dot on every curve.
            x = axes.px(self._t)
            painter.setPen(QPen(palette.color(QPalette.ColorRole.Text), 1.0, Qt.PenStyle.DashLine))
            painter.drawLine(QPointF(x, axes.rect.top()), QPointF(x, axes.rect.bottom()))
            for i, (_label, attr) in enumerate(CURVES):
                painter.setPen(QPen(palette.color(QPalette.ColorRole.Base), 1.5))
                painter.setBrush(series_color(palette, i))
                painter.drawEllipse(axes.point(self._t, float(getattr(s, attr)[self._t - 1])), 4.5, 4.5)
            painter.restore()
            metrics = QFontMetricsF(painter.font())
            colors = dict(entries)
            for r, row in enumerate(self.legend_rows()):
                baseline = metrics.ascent() + 3 + r * metrics.height()
                draw_legend(painter, QPointF(axes.rect.left(), baseline), [(lb, colors[lb]) for lb in row], palette)
        finally:
            painter.end()

"""`LossPlot`: the training loss over steps (linear or log scale) and the latest loss per
timestep bucket as bars (t ∈ (bT/10, (b+1)T/10]), painted with QPainter in the palette's colours.

The ε-prediction loss ‖ε − ε_θ(x_t, t)‖² is large at small t (the noise is hard to see) and
small at large t (x_t is almost all noise), so the bars show where the network still errs.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetricsF, QPainter, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from diffusion_studio.ui.widgets.plotting import (
    Axes,
    draw_frame,
    draw_legend,
    log_ticks,
    muted,
    nice_ticks,
    polylines,
    series_color,
)

PLACEHOLDER = "The loss appears here once training runs."


class LossPlot(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("lossPlot")
        self.setAccessibleName("Training loss plot")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 240)
        self._points: list[tuple[int, float]] = []
        self._buckets: list[float | None] = []
        self._log = False

    # --- data ------------------------------------------------------------------------------
    def clear(self) -> None:
        self._points, self._buckets = [], []
        self.update()

    def add_point(self, step: int, loss: float) -> None:
        if math.isfinite(loss):
            self._points.append((int(step), float(loss)))
            self.update()

    def set_points(self, points: list[tuple[int, float]]) -> None:
        self._points = [(int(s), float(v)) for s, v in points if math.isfinite(v)]
        self.update()

    def points(self) -> list[tuple[int, float]]:
        return list(self._points)

    def set_bucket_loss(self, values: list[float | None]) -> None:
        self._buckets = list(values)
        self.update()

    def bucket_loss(self) -> list[float | None]:
        return list(self._buckets)

    def set_log_scale(self, on: bool) -> None:
        self._log = bool(on)
        self.update()

    def log_scale(self) -> bool:
        return self._log

    # --- geometry --------------------------------------------------------------------------
    def _layout(self) -> tuple[QRectF, QRectF]:
        """(loss rectangle, bucket-bar rectangle) in pixels."""
        metrics = QFontMetricsF(self.font())
        left = metrics.horizontalAdvance("0.0000") + 12
        right = metrics.horizontalAdvance("00000") / 2 + 8
        line = metrics.height()
        width = max(10.0, self.width() - left - right)
        bars_h = max(50.0, self.height() * 0.28)
        top = line + 10
        loss_h = max(20.0, self.height() - top - bars_h - 4 * line - 14)
        loss = QRectF(left, top, width, loss_h)
        bars = QRectF(left, loss.bottom() + 2 * line + 10, width, bars_h - line - 4)
        return loss, bars

    def loss_axes(self) -> Axes | None:
        """The loss axes (None while there is nothing to draw)."""
        values = [v for _, v in self._points if v > 0 or not self._log]
        if not values:
            return None
        rect, _ = self._layout()
        lo, hi = min(values), max(values)
        if self._log:
            # quarter-decade bounds around the data
            lo, hi = 10 ** (math.floor(math.log10(lo) * 4) / 4), 10 ** (math.ceil(math.log10(hi) * 4) / 4)
            if hi <= lo:
                hi = lo * 10
        else:
            pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
            lo, hi = max(0.0, lo - pad), hi + pad
        steps = [s for s, _ in self._points]
        x0, x1 = min(steps), max(steps)
        if x1 <= x0:
            x0, x1 = x0 - 1, x1 + 1
        return Axes(rect, float(x0), float(x1), lo, hi, log_y=self._log)

    def sizeHint(self) -> QSize:
        return QSize(560, 360)

    # --- painting --------------------------------------------------------------------------
    def paintEvent(self, event: object) -> None:
        painter = QPainter(self)
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            palette = self.palette()
            painter.fillRect(self.rect(), palette.color(QPalette.ColorRole.Base))
            metrics = QFontMetricsF(painter.font())
            axes = self.loss_axes()
            if axes is None:
                painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
                painter.drawText(QRectF(self.rect()), Qt.AlignmentFlag.AlignCenter, PLACEHOLDER)
                return
            self._paint_loss(painter, axes, palette, metrics)
            self._paint_buckets(painter, palette, metrics)
        finally:
            painter.end()

    def _paint_loss(self, painter: QPainter, axes: Axes, palette: QPalette, metrics: QFontMetricsF) -> None:
        yticks = log_ticks(axes.y0, axes.y1) if self._log else nice_ticks(axes.y0, axes.y1, 4)
        if self._log and len(yticks) < 2:
            yticks = [axes.y0, axes.y1]
        draw_frame(painter, axes, palette, nice_ticks(axes.x0, axes.x1, 5), yticks,
                   fmt_x=lambda v: f"{v:g}" if v == int(v) else "", fmt_y=lambda v: f"{v:.3g}")
        color = series_color(palette, 0)
        painter.save()
        painter.setClipRect(axes.rect.adjusted(-3, -3, 3, 3))
        painter.setPen(QPen(color, 2.0))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        steps = [s for s, _ in self._points]
        values = [v for _, v in self._points]
        for line in polylines(axes, steps, values):
            painter.drawPolyline(line)
        if len(self._points) <= 60:  # few points: mark each one
            painter.setBrush(color)
            painter.setPen(Qt.PenStyle.NoPen)
            for s, v in self._points:
                if v > 0 or not self._log:
                    painter.drawEllipse(axes.point(s, v), 3.0, 3.0)
        painter.restore()
        step, loss = self._points[-1]
        title = f"loss ‖ε − ε_θ‖²  ·  step {step}: {loss:.4f}" + ("  (log scale)" if self._log else "")
        draw_legend(painter, QPointF(axes.rect.left(), metrics.ascent() + 3), [(title, color)], palette)

    def _paint_buckets(self, painter: QPainter, palette: QPalette, metrics: QFontMetricsF) -> None:
        _, rect = self._layout()
        painter.setPen(palette.color(QPalette.ColorRole.Text))
        painter.drawText(QPointF(rect.left(), rect.top() - 6),
                         "latest loss per timestep bucket (t from 1 to T, left to right)")
        values = [v for v in self._buckets if isinstance(v, (int, float)) and math.isfinite(v)]
        painter.setPen(QPen(muted(palette, 110), 1.0))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(rect)
        if not values:
            return
        top = max(values) * 1.1 or 1.0
        n = len(self._buckets)
        slot = rect.width() / n
        color = QColor(series_color(palette, 1))
        for i, value in enumerate(self._buckets):
            if value is None or not math.isfinite(value):
                continue
            h = rect.height() * min(1.0, value / top)
            bar = QRectF(rect.left() + i * slot + slot * 0.15, rect.bottom() - h, slot * 0.7, h)
            painter.fillRect(bar, color)
        painter.setPen(palette.color(QPalette.ColorRole.Text))
        label = f"{top:.3g}"
        painter.drawText(QPointF(rect.left() - metrics.horizontalAdvance(label) - 5, rect.top() + metrics.ascent()),
                         label)
        painter.drawText(QPointF(rect.left(), rect.bottom() + metrics.ascent() + 3), "t = 1")
        below = rect.bottom() + metrics.ascent() + 3
        painter.drawText(QPointF(rect.right() - metrics.horizontalAdvance("t = T"), below), "t = T")

"""Small QPainter plotting helpers shared by the schedule plot and the loss plot (no matplotlib).

Axes map data to pixels (linear or log y), ticks are "nice" numbers, and every colour is
derived from the widget's palette so plots follow light and dark themes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFontMetricsF, QPainter, QPalette, QPen, QPolygonF

# Hues (degrees) of the data series after the palette's highlight colour.
SERIES_HUES = (28, 140, 280, 0)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round numbers (1, 2, 2.5 or 5 × 10^k apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten inside [lo, hi]; 2× and 5× in between when the range is under two decades."""
    if lo <= 0 or hi <= lo:
        return []
    k_lo, k_hi = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1,) if math.log10(hi / lo) > 2 else (1, 2, 5)
    ticks = [m * 10.0**k for k in range(k_lo, k_hi + 1) for m in mults]
    return [v for v in ticks if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]


def format_tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{value:g}"


def series_color(palette: QPalette, index: int) -> QColor:
    """Series 0 is the palette's highlight; the others are fixed hues, light enough on dark themes."""
    if index == 0:
        return palette.color(QPalette.ColorRole.Highlight)
    dark = palette.color(QPalette.ColorRole.Base).lightnessF() < 0.5
    hue = SERIES_HUES[(index - 1) % len(SERIES_HUES)]
    return QColor.fromHsl(hue, 190, 165 if dark else 105)


def muted(palette: QPalette, alpha: int = 60) -> QColor:
    """The text colour, translucent: grid lines and frames."""
    color = QColor(palette.color(QPalette.ColorRole.Text))
    color.setAlpha(alpha)
    return color


@dataclass
class Axes:
    """A data window [x0, x1] × [y0, y1] drawn into `rect` (pixels); y may be log-scaled."""

    rect: QRectF
    x0: float
    x1: float
    y0: float
    y1: float
    log_y: bool = False

    def _fy(self, y: float) -> float:
        return math.log10(max(y, 1e-300)) if self.log_y else y

    def px(self, x: float) -> float:
        span = self.x1 - self.x0 or 1.0
        return self.rect.left() + (x - self.x0) / span * self.rect.width()

    def py(self, y: float) -> float:
        lo, hi = self._fy(self.y0), self._fy(self.y1)
        span = hi - lo or 1.0
        return self.rect.bottom() - (self._fy(y) - lo) / span * self.rect.height()

    def point(self, x: float, y: float) -> QPointF:
        return QPointF(self.px(x), self.py(y))


def draw_frame(
    painter: QPainter,
    axes: Axes,
    palette: QPalette,
    xticks: Sequence[float],
    yticks: Sequence[float],
    fmt_x: Callable[[float], str] = format_tick,
    fmt_y: Callable[[float], str] = format_tick,
) -> None:
    """Grid lines at the ticks, tick labels left of and below the plot, and a frame."""
    metrics = QFontMetricsF(painter.font())
    text = palette.color(QPalette.ColorRole.Text)
    r = axes.rect
    painter.setPen(QPen(muted(palette, 40), 1.0))
    for x in xticks:
        painter.drawLine(QPointF(axes.px(x), r.top()), QPointF(axes.px(x), r.bottom()))
    for y in yticks:
        painter.drawLine(QPointF(r.left(), axes.py(y)), QPointF(r.right(), axes.py(y)))
    painter.setPen(text)
    for x in xticks:
        label = fmt_x(x)
        w = metrics.horizontalAdvance(label)
        painter.drawText(QPointF(axes.px(x) - w / 2, r.bottom() + metrics.ascent() + 3), label)
    for y in yticks:
        label = fmt_y(y)
        w = metrics.horizontalAdvance(label)
        painter.drawText(QPointF(r.left() - w - 5, axes.py(y) + metrics.ascent() / 2 - 1), label)
    painter.setPen(QPen(muted(palette, 110), 1.0))
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.drawRect(r)


def polylines(axes: Axes, xs: Sequence[float], ys: Sequence[float | None]) -> list[QPolygonF]:
    """Polylines through the points, broken at non-finite (or, on log axes, non-positive) values."""
    runs: list[list[QPointF]] = [[]]
    for x, y in zip(xs, ys, strict=False):
        if y is None or not math.isfinite(y) or (axes.log_y and y <= 0):
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append(axes.point(x, y))
    return [QPolygonF(run) for run in runs if run]


def legend_entry_width(metrics: QFontMetricsF, label: str) -> float:
    """Pixels one legend entry takes (line sample, gap, label, gap to the next)."""
    return 21 + metrics.horizontalAdvance(label) + 14


def draw_legend(painter: QPainter, origin: QPointF, entries: Sequence[tuple[str, QColor]],
                palette: QPalette) -> float:
    """A one-row legend (line sample + label per entry) with its baseline left end at `origin`.

    Returns the x where it ended.
    """
    metrics = QFontMetricsF(painter.font())
    x = origin.x()
    mid = origin.y() - metrics.ascent() / 2 + 1
    for label, color in entries:
        painter.setPen(QPen(color, 2.5))
        painter.drawLine(QPointF(x, mid), QPointF(x + 16, mid))
        painter.setPen(palette.color(QPalette.ColorRole.Text))
        painter.drawText(QPointF(x + 21, origin.y()), label)
        x += legend_entry_width(metrics, label)
    return x

"""`LossPlot`: the training loss over steps (linear or log scale) and, below it, the latest
loss per timestep bucket as bars (bucket b holds t ∈ (bT/n, (b+1)T/n]); pyqtgraph plots with
pan, zoom, a hover readout and export from the context menu.

The ε-prediction loss ‖ε − ε_θ(x_t, t)‖² is large at small t (the noise is hard to see) and
small at large t (x_t is almost all noise), so the bars show where the network still errs.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QEvent, QSize
from PySide6.QtWidgets import QSizePolicy, QWidget

from diffusion_studio.ui.widgets.plotting import (
    HoverReadout,
    Readout,
    label_style,
    pg,
    series_color,
    style_plot,
)

PLACEHOLDER = "The loss appears here once training runs."
MARK_POINTS_UP_TO = 60  # with few points, each one gets a dot


class LossPlot(pg.GraphicsView):
    # Not a pg.GraphicsLayoutWidget: that one shadows clear() with its layout's (instance attribute).
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("lossPlot")
        self.setAccessibleName("Training loss plot")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 240)
        self._points: list[tuple[int, float]] = []
        self._buckets: list[float | None] = []
        self._log = False

        self.ci = pg.GraphicsLayout()
        self.setCentralItem(self.ci)
        self.lossItem: pg.PlotItem = self.ci.addPlot(row=0, col=0)
        self.lossItem.setLabel("bottom", "step")
        self.lossCurve = self.lossItem.plot([], [], name="loss")
        self.bucketItem: pg.PlotItem = self.ci.addPlot(row=1, col=0)
        self.bucketItem.setLabel("bottom", "t / T  (bucket of the sampled timestep)")
        self.bucketItem.setMouseEnabled(x=False, y=True)
        self.bucketItem.setXRange(0.0, 1.0, padding=0.02)
        self.bucketItem.hideButtons()
        self.bucketBars = pg.BarGraphItem(x0=[], height=[], width=[])
        self.bucketItem.addItem(self.bucketBars)
        layout = self.ci.layout
        layout.setRowStretchFactor(0, 5)
        layout.setRowStretchFactor(1, 2)
        self.lossHover = HoverReadout(self.lossItem, self._read_loss)
        self.bucketHover = HoverReadout(self.bucketItem, self._read_bucket)
        self._restyle()
        self._redraw()

    # --- data ------------------------------------------------------------------------------
    def clear(self) -> None:
        self._points, self._buckets = [], []
        self.lossItem.enableAutoRange()
        self._redraw()

    def add_point(self, step: int, loss: float) -> None:
        if math.isfinite(loss):
            self._points.append((int(step), float(loss)))
            self._redraw_loss()

    def set_points(self, points: list[tuple[int, float]]) -> None:
        self._points = [(int(s), float(v)) for s, v in points if math.isfinite(v)]
        self._redraw_loss()

    def points(self) -> list[tuple[int, float]]:
        return list(self._points)

    def set_bucket_loss(self, values: list[float | None]) -> None:
        self._buckets = list(values)
        self._redraw_buckets()

    def bucket_loss(self) -> list[float | None]:
        return list(self._buckets)

    def set_log_scale(self, on: bool) -> None:
        self._log = bool(on)
        self.lossHover.hide()  # its place was in the other scale
        self.lossItem.setLogMode(y=self._log)
        self.lossItem.enableAutoRange()
        self._redraw_loss()

    def log_scale(self) -> bool:
        return self._log

    # --- what is drawn (tests read these back) ---------------------------------------------
    def curve_data(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, losses) the loss curve holds (losses as given, before any log scaling)."""
        x, y = self.lossCurve.getOriginalDataset()
        return (np.asarray([] if x is None else x, float), np.asarray([] if y is None else y, float))

    def bar_data(self) -> tuple[np.ndarray, np.ndarray]:
        """(left edges in t/T, heights) of the bucket bars; empty buckets have none."""
        return (np.asarray(self.bucketBars.opts["x0"], float), np.asarray(self.bucketBars.opts["height"], float))

    def data_to_pixel(self, plot: pg.PlotItem, x: float, y: float) -> tuple[float, float]:
        """Widget pixel of data (x, y) in `plot` (y as data, log-scaled here when the axis is)."""
        if plot is self.lossItem and self._log:
            y = math.log10(y)
        vb = plot.getViewBox()
        vb.prepareForPaint()  # apply a pending auto-range first (it is otherwise applied at the next paint)
        scene = vb.mapViewToScene(pg.Point(x, y))
        pixel = self.viewportTransform().map(scene)  # viewport = widget (no frame); not rounded
        return float(pixel.x()), float(pixel.y())

    # --- drawing ---------------------------------------------------------------------------
    def _redraw(self) -> None:
        self._redraw_loss()
        self._redraw_buckets()

    def _redraw_loss(self) -> None:
        palette = self.palette()
        color = series_color(palette, 0)
        points = [(s, v) for s, v in self._points if v > 0 or not self._log]
        steps = np.array([s for s, _ in points], dtype=float)
        values = np.array([v for _, v in points], dtype=float)
        marks = len(points) <= MARK_POINTS_UP_TO
        self.lossCurve.setData(
            steps, values, pen=pg.mkPen(color, width=2),
            symbol="o" if marks else None, symbolSize=6, symbolBrush=color, symbolPen=None,
        )
        if not self._points:
            title = PLACEHOLDER
        else:
            step, loss = self._points[-1]
            title = f"loss ‖ε − ε_θ‖²  ·  step {step}: {loss:.4f}" + ("  (log scale)" if self._log else "")
        self.lossItem.setTitle(title, **label_style(palette, self.font()))

    def _redraw_buckets(self) -> None:
        palette = self.palette()
        n = len(self._buckets)
        filled = [(i, float(v)) for i, v in enumerate(self._buckets)
                  if isinstance(v, (int, float)) and math.isfinite(v)]
        width = 0.7 / n if n else 0.0
        x0 = np.array([(i + 0.15) / n for i, _ in filled], dtype=float)
        heights = np.array([v for _, v in filled], dtype=float)
        self.bucketBars.setOpts(x0=x0, height=heights, width=width,
                                brush=pg.mkBrush(series_color(palette, 1)), pen=pg.mkPen(None))
        top = float(heights.max()) * 1.1 if len(heights) and heights.max() > 0 else 1.0
        self.bucketItem.setYRange(0.0, top, padding=0.0)
        self.bucketItem.setTitle("latest loss per timestep bucket", **label_style(palette, self.font()))

    # --- hover -----------------------------------------------------------------------------
    def _read_loss(self, x: float) -> Readout:
        if not self._points:
            return None
        steps = np.array([s for s, _ in self._points], dtype=float)
        i = int(np.argmin(np.abs(steps - x)))
        step, loss = self._points[i]
        if self._log and loss <= 0:
            return None
        y = math.log10(loss) if self._log else loss
        return float(step), y, f"step {step}\nloss {loss:.5g}"

    def _read_bucket(self, x: float) -> Readout:
        n = len(self._buckets)
        if not n or not 0.0 <= x <= 1.0:
            return None
        b = min(n - 1, int(x * n))
        value = self._buckets[b]
        known = isinstance(value, (int, float)) and math.isfinite(value)
        text = f"t/T ∈ ({b / n:g}, {(b + 1) / n:g}]\n" + (f"loss {value:.5g}" if known else "no loss yet")
        return (b + 0.5) / n, float(value) if known else None, text  # type: ignore[arg-type]

    # --- palette ---------------------------------------------------------------------------
    def _restyle(self) -> None:
        palette, font = self.palette(), self.font()
        style_plot(self, [self.lossItem, self.bucketItem], palette, font)
        self.lossHover.style(palette, font)
        self.bucketHover.style(palette, font)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.FontChange) and hasattr(self, "bucketHover"):
            self._restyle()
            self._redraw()
        super().changeEvent(event)

    def leaveEvent(self, event: QEvent) -> None:
        self.lossHover.hide()
        self.bucketHover.hide()
        super().leaveEvent(event)

    def sizeHint(self) -> QSize:
        return QSize(560, 360)

"""pyqtgraph, configured once for the app's plots (schedule_plot.py, loss_plot.py), and the
pieces they share: palette-aware styling and a hover readout.

pyqtgraph picks the Qt binding that is already imported, so PySide6 is imported first (and
named in PYQTGRAPH_QT_LIB). Every colour comes from the widget's palette, so plots follow
light and dark themes instead of pyqtgraph's black default; pan and zoom are pyqtgraph's
(drag, wheel, the "A" button resets), and its context menu exports PNG, SVG or CSV.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from PySide6 import QtCore, QtGui, QtWidgets  # noqa: F401  (the binding pyqtgraph must use)
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QFont, QPalette

os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
import pyqtgraph as pg  # noqa: E402

pg.setConfigOptions(antialias=True)

# Hues (degrees) of the data series after the palette's highlight colour.
SERIES_HUES = (28, 140, 280, 0)


def series_color(palette: QPalette, index: int) -> QColor:
    """Series 0 is the palette's highlight; the others are fixed hues, light enough on dark themes."""
    if index == 0:
        return QColor(palette.color(QPalette.ColorRole.Highlight))
    hue = SERIES_HUES[(index - 1) % len(SERIES_HUES)]
    return QColor.fromHsl(hue, 190, 165 if is_dark(palette) else 105)


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Base).lightnessF() < 0.5


def muted(palette: QPalette, alpha: int = 60) -> QColor:
    """The text colour, translucent: grid lines and frames."""
    color = QColor(palette.color(QPalette.ColorRole.Text))
    color.setAlpha(alpha)
    return color


def text_color(palette: QPalette) -> QColor:
    return QColor(palette.color(QPalette.ColorRole.Text))


def background(palette: QPalette) -> QColor:
    return QColor(palette.color(QPalette.ColorRole.Base))


def style_plot(view: pg.GraphicsView, plots: Sequence[pg.PlotItem], palette: QPalette, font: QFont) -> None:
    """Palette background, text-coloured axes with the widget's font, a faint grid."""
    view.setBackground(background(palette))
    text = text_color(palette)
    for plot in plots:
        for name in ("left", "bottom"):
            axis = plot.getAxis(name)
            axis.setPen(pg.mkPen(muted(palette, 130)))
            axis.setTextPen(pg.mkPen(text))
            axis.setTickFont(font)
            axis.setStyle(tickTextOffset=4)
            if axis.labelText:
                axis.setLabel(axis.labelText, units=axis.labelUnits, **label_style(palette, font))
        plot.showGrid(x=True, y=True, alpha=0.14)
        plot.titleLabel.setAttr("color", text.name())
        plot.titleLabel.setAttr("size", f"{font.pointSizeF():g}pt")
        plot.titleLabel.setText(plot.titleLabel.text)


def label_style(palette: QPalette, font: QFont) -> dict[str, str]:
    """CSS for an axis label in the widget's font and text colour."""
    return {"color": text_color(palette).name(), "font-size": f"{font.pointSizeF():g}pt"}


def style_legend(legend: pg.LegendItem, palette: QPalette, font: QFont, frame: bool = True) -> None:
    """Text-coloured labels; a translucent box over the data, or none (a legend beside the plot)."""
    fill = background(palette)
    fill.setAlpha(215 if frame else 0)
    legend.setBrush(pg.mkBrush(fill))
    legend.setPen(pg.mkPen(muted(palette, 90)) if frame else pg.mkPen(None))
    legend.setLabelTextColor(text_color(palette))
    legend.setLabelTextSize(f"{font.pointSizeF():g}pt")


# (x of the readout line, y of its dot or None, the text), or None: nothing under the mouse.
Readout = tuple[float, float | None, str] | None


class HoverReadout:
    """A vertical line, a dot and a label that follow the mouse over a plot and show the
    values there; what to show for a data-space x comes from `read(x)`. The widget holding
    the plot calls `hide()` when the mouse leaves it."""

    def __init__(self, plot: pg.PlotItem, read: Callable[[float], Readout]) -> None:
        self.plot = plot
        self.read = read
        self.line = pg.InfiniteLine(angle=90, movable=False)
        self.dot = pg.ScatterPlotItem(size=9)
        self.label = pg.TextItem(anchor=(0, 1))
        self.text = ""
        for item in (self.line, self.dot, self.label):
            item.setZValue(20)
            item.hide()
            plot.addItem(item, ignoreBounds=True)
        plot.scene().sigMouseMoved.connect(self._on_mouse_moved)

    def style(self, palette: QPalette, font: QFont) -> None:
        text = text_color(palette)
        self.line.setPen(pg.mkPen(muted(palette, 150), width=1, style=Qt.PenStyle.DotLine))
        self.dot.setPen(pg.mkPen(text, width=2))  # a ring, told apart from filled data dots
        self.dot.setBrush(pg.mkBrush(background(palette)))
        fill = background(palette)
        fill.setAlpha(225)
        self.label.fill = pg.mkBrush(fill)
        self.label.border = pg.mkPen(muted(palette, 110))
        self.label.setColor(text)
        self.label.setFont(font)

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        vb = self.plot.getViewBox()
        if not vb.sceneBoundingRect().contains(scene_pos):
            self.hide()
            return
        self.show_at(vb.mapSceneToView(scene_pos).x())

    def show_at(self, x: float) -> str:
        """Show the readout for data x (as the mouse does); returns its text ('' for none)."""
        reading = self.read(x)
        if reading is None:
            self.hide()
            return ""
        x_snap, y, self.text = reading
        self.plot.getViewBox().prepareForPaint()  # the view range, with any pending auto-range applied
        self.line.setPos(x_snap)
        self.label.setText(self.text)
        (x0, x1), (y0, y1) = self.plot.getViewBox().viewRange()
        # The label sits right of the line, or left of it in the right half of the view.
        right_half = x_snap > (x0 + x1) / 2
        self.label.setAnchor((1.0, 0.0) if right_half else (0.0, 0.0))
        self.label.setPos(x_snap, y1)
        if y is None:
            self.dot.hide()
        else:
            self.dot.setData([x_snap], [y])
            self.dot.show()
        self.line.show()
        self.label.show()
        return self.text

    def hide(self) -> None:
        self.text = ""
        for item in (self.line, self.dot, self.label):
            item.hide()

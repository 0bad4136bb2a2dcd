"""`ToyPlot` (objectName `toyPlot`): the 2D lab's one pyqtgraph plot.

Layers, bottom to top: the learned field as arrows on a grid (one PlotDataItem with
connect='pairs' for the shafts and one for the heads: pyqtgraph has no quiver), the data
(x_0, or x_t of the forward process), the drawn anchor points, a few reverse trajectories as
lines from x_T (hollow circles) to x_0, and the samples. Clicking or dragging with the left
button adds points while drawing is on (`pointsDrawn`). Colours follow the palette (dark
text on a light background in the default theme) and the fonts are large enough to project.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QWidget

from diffusion_studio.ui.widgets.plotting import label_style, pg, style_legend, style_plot, text_color

VIEW_RANGE = 3.6  # the plot shows at least [−3.6, 3.6]²: unit-variance data, most of N(0, I), and the legend
FONT_PT = 12
HEAD_ANGLE = np.deg2rad(28.0)
HEAD_FRACTION = 0.32  # head length / arrow length

DATA_COLOR = QColor(31, 119, 180)  # blue
SAMPLE_COLOR = QColor(214, 39, 40)  # red
PATH_COLOR = QColor(255, 127, 14)  # orange
DRAWN_COLOR = QColor(44, 160, 44)  # green


class DrawViewBox(pg.ViewBox):
    """A ViewBox that turns left clicks and drags into points while `drawing` is on."""

    pointsDrawn = Signal(object)  # np.ndarray [k, 2] in data coordinates

    def __init__(self) -> None:
        super().__init__()
        self.drawing = False

    def _emit_at(self, scene_pos: object) -> None:
        p = self.mapSceneToView(scene_pos)
        self.pointsDrawn.emit(np.array([[p.x(), p.y()]], dtype=np.float64))

    def mouseClickEvent(self, ev: Any) -> None:  # noqa: N802 (Qt name)
        if self.drawing and ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self._emit_at(ev.scenePos())
        else:
            super().mouseClickEvent(ev)

    def mouseDragEvent(self, ev: Any, axis: object = None) -> None:  # noqa: N802 (Qt name)
        if self.drawing and ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self._emit_at(ev.scenePos())
        else:
            super().mouseDragEvent(ev, axis)


def arrow_segments(origins: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shafts [2K, 2], heads [4K, 2]) as point pairs for connect='pairs': each arrow from o to o + v
    and two head strokes from the tip back at ±HEAD_ANGLE. Zero-length arrows are left out."""
    keep = np.linalg.norm(vectors, axis=1) > 1e-9
    o, v = origins[keep], vectors[keep]
    tips = o + v
    shafts = np.stack([o, tips], axis=1).reshape(-1, 2)
    back = -v * HEAD_FRACTION
    strokes = []
    for angle in (HEAD_ANGLE, -HEAD_ANGLE):
        c, s = np.cos(angle), np.sin(angle)
        rotated = np.stack([c * back[:, 0] - s * back[:, 1], s * back[:, 0] + c * back[:, 1]], axis=1)
        strokes.append(np.stack([tips, tips + rotated], axis=1))
    heads = np.concatenate(strokes, axis=1).reshape(-1, 2)
    return shafts, heads


def path_polyline(paths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trajectories [K, S, 2] as one polyline broken by NaN rows (connect='finite')."""
    k, s, _ = paths.shape
    gap = np.full((k, 1, 2), np.nan)
    joined = np.concatenate([paths, gap], axis=1).reshape(-1, 2)
    return joined[:, 0], joined[:, 1]


class ToyPlot(pg.PlotWidget):
    pointsDrawn = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        self.viewBox = DrawViewBox()
        super().__init__(parent, viewBox=self.viewBox)
        self.setObjectName("toyPlot")
        self.setAccessibleName("2D lab plot: data, samples, trajectories and the learned field")
        self.setMinimumSize(420, 420)
        palette = self.palette()
        fg = text_color(palette)
        font = QFont(self.font())
        font.setPointSizeF(FONT_PT)
        item = self.getPlotItem()
        item.setAspectLocked(True)
        item.setLabel("bottom", "x₁")
        item.setLabel("left", "x₂")
        style_plot(self, [item], palette, font)
        for name in ("bottom", "left"):
            axis = item.getAxis(name)
            axis.setLabel(axis.labelText, **label_style(palette, font))
        self.setRange(xRange=(-VIEW_RANGE, VIEW_RANGE), yRange=(-VIEW_RANGE, VIEW_RANGE), padding=0)
        self.legend = item.addLegend(offset=(8, 8))
        style_legend(self.legend, palette, font)

        field_color = QColor(fg)
        field_color.setAlpha(120)
        self.fieldItem = pg.PlotDataItem(connect="pairs", pen=pg.mkPen(field_color, width=1.4),
                                         name="learned field (arrows)")
        self.fieldHeadItem = pg.PlotDataItem(connect="pairs", pen=pg.mkPen(field_color, width=1.4))
        data_brush = QColor(DATA_COLOR)
        data_brush.setAlpha(110)
        self.dataItem = pg.PlotDataItem(pen=None, symbol="o", symbolSize=5, symbolPen=None,
                                        symbolBrush=data_brush, name="data x₀")
        self.drawnItem = pg.PlotDataItem(pen=None, symbol="+", symbolSize=11,
                                         symbolPen=pg.mkPen(DRAWN_COLOR, width=2), name="drawn points")
        self.pathItem = pg.PlotDataItem(connect="finite", pen=pg.mkPen(PATH_COLOR, width=1.6),
                                        name="reverse trajectories x_T → x₀")
        self.pathStartItem = pg.PlotDataItem(pen=None, symbol="o", symbolSize=8, symbolBrush=None,
                                             symbolPen=pg.mkPen(PATH_COLOR, width=1.6))
        sample_brush = QColor(SAMPLE_COLOR)
        sample_brush.setAlpha(150)
        self.sampleItem = pg.PlotDataItem(pen=None, symbol="o", symbolSize=5, symbolPen=None,
                                          symbolBrush=sample_brush, name="samples")
        for it in (self.fieldItem, self.fieldHeadItem, self.dataItem, self.drawnItem, self.pathItem,
                   self.pathStartItem, self.sampleItem):
            item.addItem(it)
        self._legend_items: dict[str, pg.PlotDataItem] = {}
        self.viewBox.pointsDrawn.connect(self.pointsDrawn)
        self._sync_legend()

    # --- drawing -----------------------------------------------------------------------------
    def set_drawing(self, on: bool) -> None:
        self.viewBox.drawing = bool(on)
        self.viewBox.setMouseEnabled(x=not on, y=not on)  # no panning while drawing
        self.setCursor(Qt.CursorShape.CrossCursor if on else Qt.CursorShape.ArrowCursor)

    # --- layers ------------------------------------------------------------------------------
    def set_data(self, points: np.ndarray | None, name: str) -> None:
        if points is None or len(points) == 0:
            self.dataItem.setData([], [])
        else:
            self.dataItem.setData(points[:, 0], points[:, 1])
        self.dataItem.opts["name"] = name
        self._sync_legend()

    def set_drawn(self, points: np.ndarray | None) -> None:
        if points is None or len(points) == 0:
            self.drawnItem.setData([], [])
        else:
            self.drawnItem.setData(points[:, 0], points[:, 1])
        self._sync_legend()

    def set_samples(self, points: np.ndarray | None, name: str = "samples") -> None:
        if points is None or len(points) == 0:
            self.sampleItem.setData([], [])
        else:
            self.sampleItem.setData(points[:, 0], points[:, 1])
        self.sampleItem.opts["name"] = name
        self._sync_legend()

    def set_paths(self, paths: np.ndarray | None) -> None:
        """Reverse trajectories [K, S, 2] from x_T (marked) to x_0, or None."""
        if paths is None or paths.size == 0:
            self.pathItem.setData([], [])
            self.pathStartItem.setData([], [])
        else:
            x, y = path_polyline(paths)
            self.pathItem.setData(x, y)
            self.pathStartItem.setData(paths[:, 0, 0], paths[:, 0, 1])
        self._sync_legend()

    def set_field(self, origins: np.ndarray | None, vectors: np.ndarray | None, name: str = "") -> None:
        if origins is None or vectors is None or len(origins) == 0:
            self.fieldItem.setData([], [])
            self.fieldHeadItem.setData([], [])
        else:
            shafts, heads = arrow_segments(origins, vectors)
            self.fieldItem.setData(shafts[:, 0], shafts[:, 1])
            self.fieldHeadItem.setData(heads[:, 0], heads[:, 1])
        if name:
            self.fieldItem.opts["name"] = name
        self._sync_legend()

    def _sync_legend(self) -> None:
        """The legend lists the layers that show something, under their current names.

        Rebuilt only when that list changes: it is asked for on every training update, and each
        rebuild deletes and creates the legend's graphics items inside a live scene."""
        entries = [(it, it.opts["name"])
                   for it in (self.dataItem, self.drawnItem, self.sampleItem, self.pathItem, self.fieldItem)
                   if it.isVisible() and it.xData is not None and len(it.xData) > 0]
        if entries == getattr(self, "_legend_entries", None):
            return
        self._legend_entries = entries
        # The cleared entries' graphics items stay referenced (PySide would otherwise delete them
        # while the live scene may still paint them); a rebuild happens only when the layers change.
        self._retired_legend_items = [*getattr(self, "_retired_legend_items", []), *self.legend.items][-64:]
        self.legend.clear()
        for it, name in entries:
            self.legend.addItem(it, name)

    def set_layer_visible(self, layer: str, visible: bool) -> None:
        items = {"data": (self.dataItem, self.drawnItem), "samples": (self.sampleItem,),
                 "paths": (self.pathItem, self.pathStartItem), "field": (self.fieldItem, self.fieldHeadItem)}[layer]
        for it in items:
            it.setVisible(visible)
        self._sync_legend()

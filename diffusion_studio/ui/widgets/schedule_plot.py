"""`SchedulePlot`: the noise schedule over t ∈ [1, T] as a pyqtgraph plot, with

- ᾱ_t of the linear (DDPM) and cosine (Improved DDPM) schedules at the same T, the one in use
  drawn solid, the other dashed; the loaded model's schedule too when its T differs;
- a log-SNR view, λ_t = log(ᾱ_t / (1 − ᾱ_t)), the axis DPM-Solver++ steps along;
- a marker line at the current t;
- the timesteps a sampler run visits, marked on the curve: `core.sampling_loop.img2img_timesteps`
  (strength 1 is `core.sampler_steps.make_timesteps`), for the sampler, steps and strength
  chosen in the row above the plot (which follows the Generate form when `follow()` is called).

Pan and zoom with the mouse (the "A" button resets), hover for the values at a t, and export
from the right-click menu.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QPointF, QSize, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.core.params import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLER_LABELS, parse_sampler
from diffusion_studio.core.sampling_loop import img2img_timesteps
from diffusion_studio.core.schedule import Schedule, ScheduleKind, make_schedule
from diffusion_studio.errors import UsageError
from diffusion_studio.ui.widgets.flow_row import FlowRow
from diffusion_studio.ui.widgets.plotting import (
    HoverReadout,
    Readout,
    background,
    label_style,
    pg,
    series_color,
    style_legend,
    style_plot,
    text_color,
)

if TYPE_CHECKING:
    from diffusion_studio.ui.generate.state import GenerateState
    from diffusion_studio.ui.models import LoadedModel

KINDS = (ScheduleKind.LINEAR, ScheduleKind.COSINE)  # always overlaid; another kind only while in use
COLOR_INDEX = {ScheduleKind.LINEAR: 0, ScheduleKind.COSINE: 1, "model": 2, "visited": 3,
               ScheduleKind.SCALED_LINEAR: 4}


def log_snr(schedule: Schedule) -> np.ndarray:
    """λ_t = log SNR(t) = log(ᾱ_t / (1 − ᾱ_t)) for t = 1..T."""
    return np.log(np.asarray(schedule.snr, dtype=np.float64))


class SchedulePlot(QWidget):
    def __init__(self, schedule: Schedule, t: int = 1, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("schedulePlot")
        self.setAccessibleName("Noise schedule plot")
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._schedule = schedule
        self._others: dict[ScheduleKind, Schedule] = {}
        self._model: Schedule | None = None
        self._model_name = ""
        self._t = max(1, min(int(t), schedule.T))
        self._visited = np.zeros(0, dtype=np.int64)
        self._legend_width = 0.0
        self._followed: GenerateState | None = None
        self._build_controls()
        self._build_graph()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(self._controls)
        layout.addWidget(self.graph, 1)
        self._restyle()
        self.set_schedule(schedule)

    # --- construction ----------------------------------------------------------------------
    def _build_controls(self) -> None:
        self.logSnrCheck = QCheckBox("log-SNR λ_t", objectName="scheduleLogSnrCheck")
        self.logSnrCheck.setToolTip("Plot λ_t = log(ᾱ_t / (1 − ᾱ_t)) instead of ᾱ_t")
        self.logSnrCheck.toggled.connect(self._on_view_toggled)
        self.samplerCombo = QComboBox(objectName="scheduleSamplerCombo")
        for kind, label in SAMPLER_LABELS.items():
            self.samplerCombo.addItem(label, kind.value)
        self.samplerCombo.setCurrentIndex(self.samplerCombo.findData(DEFAULT_SAMPLER.value))
        self.samplerCombo.setToolTip("The sampler whose run is marked on the curve; every sampler here "
                                     "visits the same timesteps and differs in how a step moves x_t")
        self.stepsSpin = QSpinBox(objectName="scheduleStepsSpin", minimum=1, maximum=max(1, self._schedule.T))
        self.stepsSpin.setValue(min(DEFAULT_STEPS, self._schedule.T))
        self.stepsSpin.setToolTip("Sampler steps: the dots are the timesteps the run visits")
        self.strengthSpin = QDoubleSpinBox(objectName="scheduleStrengthSpin", minimum=0.05, maximum=1.0,
                                           singleStep=0.05, decimals=2, value=1.0)
        self.strengthSpin.setToolTip("img2img (SDEdit) strength: the run starts at t = strength · T "
                                     "(1 = text to image, from pure noise)")
        for widget in (self.samplerCombo, self.stepsSpin, self.strengthSpin):
            signal = widget.currentIndexChanged if isinstance(widget, QComboBox) else widget.valueChanged
            signal.connect(self._update_visited)
        # One row when there is room, wrapped onto more rows in a narrow panel.
        self._controls = FlowRow(spacing=12)
        self._controls.addWidget(self.logSnrCheck)
        for text, widget in (("Sampler", self.samplerCombo), ("Steps", self.stepsSpin),
                             ("Strength", self.strengthSpin)):
            pair = QWidget()
            row = QHBoxLayout(pair)
            row.setContentsMargins(0, 0, 0, 0)
            row.setSpacing(4)
            caption = QLabel(text)
            caption.setBuddy(widget)
            row.addWidget(caption)
            row.addWidget(widget)
            self._controls.addWidget(pair)

    def _build_graph(self) -> None:
        self.graph = pg.GraphicsLayoutWidget()
        self.graph.setObjectName("scheduleGraph")
        self.graph.setAccessibleName("Noise schedule graph")
        self.graph.setMinimumSize(200, 200)
        # The legend above the plot (as many columns as fit), so it never hides a curve.
        self.legend = pg.LegendItem(colCount=4, horSpacing=14, verSpacing=-6)
        self._retired_legend_items: list[tuple[object, object]] = []  # see _hide_curve
        self.graph.addItem(self.legend, row=0, col=0)
        self.plotItem: pg.PlotItem = self.graph.addPlot(row=1, col=0)
        self.plotItem.setLabel("bottom", "t")
        self.curves: dict[ScheduleKind | str, pg.PlotDataItem] = {}
        for key in (*ScheduleKind, "model"):
            self.curves[key] = self.plotItem.plot([], [])
        self.visitedItem = pg.ScatterPlotItem(size=7)
        self.plotItem.addItem(self.visitedItem)
        self.tLine = pg.InfiniteLine(angle=90, movable=False, label="t = {value:.0f}",
                                     labelOpts={"position": 0.98, "anchors": [(0, 0), (0, 0)]})
        self.tDot = pg.ScatterPlotItem(size=10)
        for item in (self.tLine, self.tDot):
            item.setZValue(10)
            self.plotItem.addItem(item, ignoreBounds=True)
        self.hover = HoverReadout(self.plotItem, self._read)

    # --- inputs ----------------------------------------------------------------------------
    def set_schedule(self, schedule: Schedule) -> None:
        """The schedule in use (the Forward workspace's): its kind solid, the other kind at the same T dashed."""
        self._schedule = schedule
        kinds = KINDS if schedule.kind in KINDS else (*KINDS, schedule.kind)
        self._others = {kind: schedule if kind is schedule.kind else make_schedule(kind, schedule.T)
                        for kind in kinds}
        self._t = min(self._t, schedule.T)
        self.stepsSpin.blockSignals(True)
        self.stepsSpin.setMaximum(schedule.T)
        self.stepsSpin.blockSignals(False)
        self._redraw(reset_view=True)

    def set_model_schedule(self, schedule: Schedule | None, name: str = "") -> None:
        """The loaded model's schedule: its own curve when it is none of the overlaid ones (another T,
        other β ends), else the legend names the curve it equals."""
        self._model, self._model_name = schedule, name
        self._redraw(reset_view=True)

    def set_t(self, t: int) -> None:
        self._t = max(1, min(int(t), self._schedule.T))
        self._draw_t()

    def t(self) -> int:
        return self._t

    def set_sampling(self, sampler: str | None = None, steps: int | None = None,
                     strength: float | None = None) -> None:
        """The run whose timesteps are marked (None keeps a value); steps are clamped to 1..T."""
        if sampler is not None:
            index = self.samplerCombo.findData(parse_sampler(sampler).value)
            self.samplerCombo.setCurrentIndex(index)
        if steps is not None:
            self.stepsSpin.setValue(int(steps))
        if strength is not None:
            self.strengthSpin.setValue(float(strength))

    def set_log_snr(self, on: bool) -> None:
        self.logSnrCheck.setChecked(bool(on))

    def log_snr(self) -> bool:
        return self.logSnrCheck.isChecked()

    def follow(self, state: GenerateState) -> None:
        """Take sampler, steps and (with an init image) the img2img strength from the Generate
        form, and the loaded model's schedule, now and whenever they change."""
        self._followed = state
        state.settingsChanged.connect(self._take_settings)
        state.initImageChanged.connect(self._take_settings)
        state.modelChanged.connect(self._take_model)
        self._take_settings()
        self._take_model(state.model)

    def _take_settings(self, *_args: object) -> None:
        state = self._followed
        if state is None:
            return
        settings = state.settings
        strength = settings.strength if state.init_image is not None else 1.0
        try:
            self.set_sampling(settings.sampler, settings.steps, strength)
        except UsageError:
            pass  # an unknown sampler name is the Generate form's to report; keep ours

    def _take_model(self, model: LoadedModel | None) -> None:
        if model is None:
            self.set_model_schedule(None)
        else:
            self.set_model_schedule(model.bundle.schedule, model.name)

    # --- outputs (tests read these back) ---------------------------------------------------
    def visited_timesteps(self) -> np.ndarray:
        """The timesteps the chosen run visits, descending (from the core's spacing function)."""
        return self._visited.copy()

    def sampler(self) -> str:
        return str(self.samplerCombo.currentData())

    def values(self, schedule: Schedule) -> np.ndarray:
        """What the current view plots for a schedule over t = 1..T: ᾱ_t or λ_t."""
        return log_snr(schedule) if self.log_snr() else np.asarray(schedule.alphas_cumprod, dtype=np.float64)

    def curve_data(self, key: ScheduleKind | str) -> tuple[np.ndarray, np.ndarray]:
        """(t, value) held by the curve of a schedule kind ('linear', …) or 'model' (empty when hidden)."""
        key = key if key == "model" else ScheduleKind(key)
        x, y = self.curves[key].getOriginalDataset()
        return (np.asarray([] if x is None else x, float), np.asarray([] if y is None else y, float))

    def visited_data(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.visitedItem.getData()
        return np.asarray(x, float), np.asarray(y, float)

    def data_to_pixel(self, x: float, y: float) -> tuple[float, float]:
        """Pixel of data point (x, y) in this widget's coordinates."""
        vb = self.plotItem.getViewBox()
        vb.prepareForPaint()  # apply a pending auto-range first (it is otherwise applied at the next paint)
        scene = vb.mapViewToScene(QPointF(x, y))
        pixel = self.graph.viewportTransform().map(scene)  # (mapFromScene would round to whole pixels)
        offset = self.graph.viewport().mapTo(self, QPoint(0, 0))
        return float(pixel.x() + offset.x()), float(pixel.y() + offset.y())

    def marker_x(self) -> float:
        """Pixel x of the current-t marker (for tests and hit checks)."""
        return self.data_to_pixel(self._t, 0.0)[0]

    def legend_width(self) -> float:
        """The legend's entries' width in pixels (its columns are chosen to fit the plot)."""
        return float(self._legend_width)

    # --- drawing ---------------------------------------------------------------------------
    def _symbol(self) -> str:
        return "λ<sub>t</sub>" if self.log_snr() else "ᾱ<sub>t</sub>"

    def _redraw(self, reset_view: bool = False) -> None:
        palette = self.palette()
        current = self._schedule.kind
        model_twin = self._model_twin()
        for kind in ScheduleKind:
            curve = self.curves[kind]
            if kind not in self._others:
                self._hide_curve(curve)
                continue
            schedule = self._others[kind]
            solid = kind is current
            pen = pg.mkPen(series_color(palette, COLOR_INDEX[kind]), width=2.5 if solid else 1.5,
                           style=Qt.PenStyle.SolidLine if solid else Qt.PenStyle.DashLine)
            curve.setData(np.arange(1, schedule.T + 1), self.values(schedule), pen=pen)
            label = f"{kind.value} {self._symbol()}" + ("  (in use)" if solid else "")
            if model_twin is kind:
                label += f"  = {self._model_name or 'model'}"
            self._set_legend_label(curve, label)
        model = self.curves["model"]
        if self._model is not None and model_twin is None:
            m = self._model
            model.setData(np.arange(1, m.T + 1), self.values(m),
                          pen=pg.mkPen(series_color(palette, COLOR_INDEX["model"]), width=2,
                                       style=Qt.PenStyle.DotLine))
            self._set_legend_label(model, f"{self._model_name or 'model'}: {m.kind.value}, T = {m.T}")
        else:
            self._hide_curve(model)
        self.plotItem.setLabel("left", "λ<sub>t</sub> = log SNR" if self.log_snr() else "ᾱ<sub>t</sub>",
                               **label_style(palette, self.font()))
        self._update_visited()
        self._draw_t()
        if reset_view:
            self.plotItem.enableAutoRange()

    def _model_twin(self) -> ScheduleKind | None:
        """The overlaid kind whose ᾱ_t equal the model's (None: the model's schedule differs, or no model)."""
        m = self._model
        if m is None:
            return None
        for kind, schedule in self._others.items():
            if schedule.T == m.T and np.allclose(schedule.alphas_cumprod, m.alphas_cumprod, rtol=1e-12, atol=0):
                return kind
        return None

    def _hide_curve(self, curve: pg.PlotDataItem) -> None:
        curve.setData([], [])
        if self.legend.getLabel(curve) is not None:
            # Keep the removed entry's graphics items referenced: dropped here, PySide would delete
            # them while the live scene may still paint them (suspected in a pyqtgraph segfault).
            self._retired_legend_items.extend(pair for pair in self.legend.items if pair[0].item is curve)
            self.legend.removeItem(curve)

    def _set_legend_label(self, item: pg.GraphicsObject, label: str) -> None:
        """Rename an entry (added on first use; the legend keeps its entries in insertion order)."""
        entry = self.legend.getLabel(item)
        if entry is None:
            self.legend.addItem(item, label)
            style_legend(self.legend, self.palette(), self.font(), frame=False)
        else:
            entry.setText(label)
        self._fit_legend()

    def _fit_legend(self) -> None:
        """As many legend columns as fit the plot's width (entries fill rows left to right)."""
        # natural widths: the sample, its label's text (not the label's laid-out width) and a gap
        widths = [sample.boundingRect().width() + label.item.boundingRect().width() + 14
                  for sample, label in self.legend.items]
        room = self.graph.width() - 32
        columns = 1
        for n in range(len(widths), 0, -1):
            total = sum(max(widths[c::n]) for c in range(n))
            if total <= room:
                columns = n
                break
        self.legend.setColumnCount(columns)
        self._legend_width = sum(max(widths[c::columns]) for c in range(columns)) if widths else 0.0

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._fit_legend()

    def _visited_label(self) -> str:
        return f"{self.samplerCombo.currentText()}: {len(self._visited)} steps"

    def _update_visited(self, *_args: object) -> None:
        s = self._schedule
        steps = min(int(self.stepsSpin.value()), s.T)
        self._visited = img2img_timesteps(s.T, steps, float(self.strengthSpin.value()))
        values = self.values(s)[self._visited - 1]
        palette = self.palette()
        self.visitedItem.setData(self._visited.astype(float), values, symbol="o", size=7,
                                 brush=pg.mkBrush(series_color(palette, COLOR_INDEX["visited"])),
                                 pen=pg.mkPen(background(palette), width=1))
        self._set_legend_label(self.visitedItem, self._visited_label())

    def _draw_t(self) -> None:
        palette = self.palette()
        self.tLine.setPos(self._t)
        y = float(self.values(self._schedule)[self._t - 1])
        self.tDot.setData([float(self._t)], [y], brush=pg.mkBrush(text_color(palette)),  # as the t line
                          pen=pg.mkPen(background(palette), width=1.5))

    def _on_view_toggled(self, _on: bool) -> None:
        self.hover.hide()
        self._redraw(reset_view=True)

    # --- hover -----------------------------------------------------------------------------
    def _read(self, x: float) -> Readout:
        T_max = max(self._schedule.T, self._model.T if self._model is not None else 0)
        t = int(round(x))
        if not 1 <= t <= T_max:
            return None
        sym = "λ" if self.log_snr() else "ᾱ"
        lines = [f"t = {t}"]
        for kind, schedule in self._others.items():
            if t <= schedule.T:
                lines.append(f"{kind.value} {sym} = {self.values(schedule)[t - 1]:.4g}")
        if self._model is not None and self._model_twin() is None and t <= self._model.T:
            lines.append(f"{self._model_name or 'model'} {sym} = {self.values(self._model)[t - 1]:.4g}")
        hits = np.flatnonzero(self._visited == t)
        if len(hits):
            lines.append(f"step {int(hits[0]) + 1} of {len(self._visited)}")
        y = float(self.values(self._schedule)[t - 1]) if t <= self._schedule.T else None
        return float(t), y, "\n".join(lines)

    # --- palette ---------------------------------------------------------------------------
    def _restyle(self) -> None:
        palette, font = self.palette(), self.font()
        style_plot(self.graph, [self.plotItem], palette, font)
        style_legend(self.legend, palette, font, frame=False)
        self.hover.style(palette, font)
        text = text_color(palette)
        self.tLine.setPen(pg.mkPen(text, width=1, style=Qt.PenStyle.DashLine))
        self.tLine.label.setColor(text)
        self.tLine.label.setFont(font)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.FontChange) and hasattr(self, "hover"):
            self._restyle()
            self._redraw()
        super().changeEvent(event)

    def leaveEvent(self, event: QEvent) -> None:
        self.hover.hide()  # the mouse left the plot
        super().leaveEvent(event)

    def sizeHint(self) -> QSize:
        return QSize(480, 260)

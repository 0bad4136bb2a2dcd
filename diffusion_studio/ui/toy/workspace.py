"""The 2D lab workspace (objectName `toyLab`): diffusion on point clouds you can see whole.

Left, the controls with the equation of each stage under it: the dataset (or "Draw points":
click and drag on the plot), the timestep slider of the forward process, training an MLP ε_θ
(with its live loss curve) and sampling it with the image samplers. Right, one plot with the
data (or x_t), the samples, a few reverse trajectories and the learned field at t, and under
it the sliced Wasserstein distances of the samples and of the initial noise to the data.

A Qt view over `ToyState` (state.py); training and sampling run in worker threads.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.core.params import SAMPLER_LABELS, SamplerKind, parse_sampler
from diffusion_studio.core.sliced_wasserstein import DEFAULT_PROJECTIONS
from diffusion_studio.core.toy_data import DATASET_LABELS, ToyDataset
from diffusion_studio.errors import UsageError
from diffusion_studio.ui.toy.plot import FONT_PT, ToyPlot
from diffusion_studio.ui.toy.state import (
    DEFAULT_SAMPLER_STEPS,
    DEFAULT_TRAIN_STEPS,
    MAX_TRAIN_STEPS,
    FieldKind,
    ToyState,
)
from diffusion_studio.ui.widgets.hats import hat_font
from diffusion_studio.ui.widgets.plotting import pg, series_color, style_plot

EQUATIONS = {
    "forward": "x_t = √ᾱ_t · x₀ + √(1 − ᾱ_t) · ε,   ε ~ N(0, I)   (DDPM eq. 4)",
    "train": "L = ‖ε − ε_θ(√ᾱ_t x₀ + √(1 − ᾱ_t) ε, t)‖²,  t uniform in 1…T  (DDPM Algorithm 1)",
    "score": "score ∇ log p_t(x) ≈ −ε_θ(x, t) / √(1 − ᾱ_t)",
    SamplerKind.DDPM: "x_{t−1} = μ̃(x_t, x̂₀) + σ_t z   (Algorithm 2)",
    SamplerKind.DDIM: "x_{t−1} = √ᾱ_{t−1} x̂₀ + √(1 − ᾱ_{t−1}) ε̂   (DDIM eq. 12, η = 0)",
    SamplerKind.DPMPP_2M: "x_s = (σ_s/σ_t) x_t − √ᾱ_s (e^(−h) − 1) D,  D from x̂₀ of two steps  (Lu et al. 2022)",
}
# No hats here: the legend's labels cannot take the hat font (widgets.hats).
FIELD_LABELS = {FieldKind.SCORE: "score −ε_θ/√(1−ᾱ_t)", FieldKind.EPS: "noise prediction ε_θ", FieldKind.OFF: "off"}
SW_HELP = (f"Sliced Wasserstein distance SW₁ to the data: the mean over {DEFAULT_PROJECTIONS} random directions θ"
           " of the 1D Wasserstein distance between the projections ⟨θ, x⟩ (0 = the same cloud).")


def _equation(text: str) -> QLabel:
    label = QLabel(text, objectName="toyEquation", wordWrap=True)
    font = hat_font(label.font())  # x̂₀ and ε̂ with their hats in place
    font.setItalic(True)
    label.setFont(font)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class ToyLabWorkspace(QWidget):
    errorOccurred = Signal(str, str)  # title, one-sentence message
    statusMessage = Signal(str)

    def __init__(self, state: ToyState | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("toyLab")
        font = QFont(self.font())
        font.setPointSizeF(max(font.pointSizeF(), FONT_PT - 1))
        self.setFont(font)
        self.state = state or ToyState(self)
        self.toyPlot = ToyPlot(self)
        self._build()
        st = self.state
        st.dataChanged.connect(self._on_data_changed)
        st.tChanged.connect(self._on_t_changed)
        st.modelChanged.connect(self._refresh_field)
        st.lossChanged.connect(self._refresh_loss)
        st.samplesChanged.connect(self._refresh_samples)
        st.busyChanged.connect(self._on_busy_changed)
        st.message.connect(self._show_message)
        self.toyPlot.pointsDrawn.connect(st.add_drawn)
        self._on_data_changed()
        self._on_t_changed(st.t)
        self._on_busy_changed("")

    # --- construction ----------------------------------------------------------------------
    def _build(self) -> None:
        controls = QWidget(objectName="toyControls")
        column = QVBoxLayout(controls)
        column.setContentsMargins(0, 0, 6, 0)
        column.addWidget(self._build_data_box())
        column.addWidget(self._build_forward_box())
        column.addWidget(self._build_train_box())
        column.addWidget(self._build_sample_box())
        column.addWidget(self._build_show_box())
        column.addStretch(1)
        scroll = QScrollArea(objectName="toyControlsScroll", widgetResizable=True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(controls)
        scroll.setFixedWidth(450)

        right = QVBoxLayout()
        right.addWidget(self.toyPlot, 1)
        self.toyDistanceLabel = QLabel(objectName="toyDistanceLabel", wordWrap=True)
        self.toyDistanceLabel.setTextFormat(Qt.TextFormat.RichText)
        self.toyDistanceLabel.setToolTip(SW_HELP)
        self.toyStatusLabel = QLabel(objectName="toyStatusLabel", wordWrap=True)
        right.addWidget(self.toyDistanceLabel)
        right.addWidget(self.toyStatusLabel)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(scroll)
        layout.addLayout(right, 1)

    def _build_data_box(self) -> QGroupBox:
        box = QGroupBox("1 · Data x₀")
        form = QVBoxLayout(box)
        self.toyDatasetCombo = QComboBox(objectName="toyDatasetCombo")
        for kind, label in DATASET_LABELS.items():
            self.toyDatasetCombo.addItem(label, kind.value)
        self.toyDatasetCombo.setCurrentIndex(self.toyDatasetCombo.findData(self.state.dataset.value))
        self.toyDatasetCombo.currentIndexChanged.connect(
            lambda _i: self.state.set_dataset(str(self.toyDatasetCombo.currentData())))
        row = QHBoxLayout()
        row.addWidget(self.toyDatasetCombo, 1)
        self.toyResampleButton = QPushButton("New draw", objectName="toyResampleButton")
        self.toyResampleButton.setToolTip("Another sample of the same distribution (the next seed).")
        self.toyResampleButton.clicked.connect(self.state.new_data_sample)
        self.toyClearButton = QPushButton("Clear drawing", objectName="toyClearButton")
        self.toyClearButton.clicked.connect(self.state.clear_drawn)
        row.addWidget(self.toyResampleButton)
        row.addWidget(self.toyClearButton)
        self.toyDataHint = QLabel(objectName="toyDataHint", wordWrap=True)
        form.addLayout(row)
        form.addWidget(self.toyDataHint)
        return box

    def _build_forward_box(self) -> QGroupBox:
        box = QGroupBox("2 · Forward process q(x_t | x₀)")
        form = QVBoxLayout(box)
        self.toyTimestepSlider = QSlider(Qt.Orientation.Horizontal, objectName="toyTimestepSlider")
        self.toyTimestepSlider.setRange(0, self.state.T)
        self.toyTimestepSlider.setPageStep(50)
        self.toyTimestepSlider.valueChanged.connect(self.state.set_t)
        self.toyTimestepLabel = QLabel(objectName="toyTimestepLabel", wordWrap=True)
        form.addWidget(self.toyTimestepLabel)
        form.addWidget(self.toyTimestepSlider)
        form.addWidget(_equation(EQUATIONS["forward"]))
        return box

    def _build_train_box(self) -> QGroupBox:
        box = QGroupBox("3 · Train ε_θ (an MLP, numpy)")
        form = QVBoxLayout(box)
        row = QHBoxLayout()
        self.toyTrainStepsSpin = QSpinBox(objectName="toyTrainStepsSpin")
        self.toyTrainStepsSpin.setRange(10, MAX_TRAIN_STEPS)
        self.toyTrainStepsSpin.setSingleStep(500)
        self.toyTrainStepsSpin.setValue(DEFAULT_TRAIN_STEPS)
        self.toyTrainStepsSpin.setSuffix(" steps")
        self.toyTrainButton = QPushButton("Train", objectName="toyTrainButton")
        self.toyTrainButton.clicked.connect(self._train)
        self.toyStopButton = QPushButton("Stop", objectName="toyStopButton")
        self.toyStopButton.clicked.connect(self.state.cancel)
        row.addWidget(self.toyTrainStepsSpin, 1)
        row.addWidget(self.toyTrainButton)
        row.addWidget(self.toyStopButton)
        form.addLayout(row)
        self.toyLossPlot = pg.PlotWidget(objectName="toyLossPlot")
        self.toyLossPlot.setAccessibleName("Training loss of the 2D lab")
        self.toyLossPlot.setMinimumHeight(120)
        self.toyLossPlot.setMaximumHeight(140)
        self.toyLossPlot.setMinimumWidth(200)
        loss_item = self.toyLossPlot.getPlotItem()
        loss_item.setLabel("bottom", "step")
        loss_item.setLabel("left", "loss")
        style_plot(self.toyLossPlot, [loss_item], self.palette(), self.font())
        loss_item.setMouseEnabled(x=False, y=False)
        color = series_color(self.palette(), 0)
        faint = QColor(color)
        faint.setAlpha(70)
        self.lossRawItem = loss_item.plot(pen=pg.mkPen(faint, width=1))
        self.lossItem = loss_item.plot(pen=pg.mkPen(color, width=2.2))
        form.addWidget(self.toyLossPlot)
        form.addWidget(_equation(EQUATIONS["train"]))
        return box

    def _build_sample_box(self) -> QGroupBox:
        box = QGroupBox("4 · Sample (reverse process)")
        form = QVBoxLayout(box)
        grid = QFormLayout()
        self.toySamplerCombo = QComboBox(objectName="toySamplerCombo")
        for kind, label in SAMPLER_LABELS.items():
            self.toySamplerCombo.addItem(label, kind.value)
        self.toySamplerCombo.currentIndexChanged.connect(self._on_sampler_changed)
        self.toyStepsSpin = QSpinBox(objectName="toyStepsSpin")
        self.toyStepsSpin.setRange(1, self.state.T)
        grid.addRow("Sampler", self.toySamplerCombo)
        grid.addRow("Steps", self.toyStepsSpin)
        form.addLayout(grid)
        self.toySampleButton = QPushButton("Sample", objectName="toySampleButton")
        self.toySampleButton.clicked.connect(self._sample)
        form.addWidget(self.toySampleButton)
        self.samplerEquation = _equation("")
        form.addWidget(self.samplerEquation)
        self._on_sampler_changed()
        return box

    def _build_show_box(self) -> QGroupBox:
        box = QGroupBox("Show")
        form = QVBoxLayout(box)
        row = QHBoxLayout()
        self.layerChecks: dict[str, QCheckBox] = {}
        for layer, text in (("data", "data"), ("samples", "samples"), ("paths", "trajectories")):
            check = QCheckBox(text, objectName=f"toyShow{layer.capitalize()}Check", checked=True)
            check.toggled.connect(lambda on, name=layer: self.toyPlot.set_layer_visible(name, on))
            self.layerChecks[layer] = check
            row.addWidget(check)
        form.addLayout(row)
        field_row = QHBoxLayout()
        field_row.addWidget(QLabel("Field at t"))
        self.toyFieldCombo = QComboBox(objectName="toyFieldCombo")
        for kind, label in FIELD_LABELS.items():
            self.toyFieldCombo.addItem(label, kind)
        self.toyFieldCombo.currentIndexChanged.connect(self._refresh_field)
        field_row.addWidget(self.toyFieldCombo, 1)
        form.addLayout(field_row)
        form.addWidget(_equation(EQUATIONS["score"]))
        return box

    # --- actions -----------------------------------------------------------------------------
    def _train(self) -> None:
        try:
            self.state.start_training(int(self.toyTrainStepsSpin.value()))
        except UsageError as exc:
            self._show_message(str(exc))

    def _sample(self) -> None:
        try:
            self.state.start_sampling(str(self.toySamplerCombo.currentData()), int(self.toyStepsSpin.value()))
        except UsageError as exc:
            self._show_message(str(exc))

    def _on_sampler_changed(self, *_: object) -> None:
        kind = parse_sampler(str(self.toySamplerCombo.currentData()))
        self.toyStepsSpin.setValue(DEFAULT_SAMPLER_STEPS[kind])
        self.samplerEquation.setText(EQUATIONS[kind])

    def _show_message(self, text: str) -> None:
        self.toyStatusLabel.setText(text)
        self.statusMessage.emit(text)

    # --- views follow the state ----------------------------------------------------------------
    def _on_busy_changed(self, busy: str) -> None:
        idle = not busy
        for widget in (self.toyTrainButton, self.toySampleButton, self.toyDatasetCombo, self.toyResampleButton,
                       self.toyClearButton, self.toyTrainStepsSpin):
            widget.setEnabled(idle)
        self.toyStopButton.setEnabled(not idle)
        self.toySampleButton.setEnabled(idle and self.state.model is not None)
        self.toyTrainButton.setText("Training…" if busy == "train" else "Train")
        self.toySampleButton.setText("Sampling…" if busy == "sample" else "Sample")
        self._sync_drawing()

    def _sync_drawing(self) -> None:
        drawing = self.state.dataset is ToyDataset.DRAWN
        self.toyPlot.set_drawing(drawing and not self.state.busy)
        self.toyClearButton.setVisible(drawing)
        self.toyResampleButton.setVisible(not drawing)
        if drawing:
            n = len(self.state.drawn)
            self.toyDataHint.setText(f"Click or drag on the plot to add points ({n} so far); each data point is "
                                     "one of them plus a little Gaussian jitter.")
        else:
            self.toyDataHint.setText(f"{len(self.state.data)} points, scaled to unit variance (seed "
                                     f"{self.state.seed}).")

    def _on_data_changed(self) -> None:
        self._sync_drawing()
        st = self.state
        self.toyPlot.set_drawn(st.drawn if st.dataset is ToyDataset.DRAWN else None)
        self._refresh_data()

    def _refresh_data(self) -> None:
        st = self.state
        name = "data x₀" if st.t == 0 else f"forward x_t, t = {st.t}"
        self.toyPlot.set_data(st.x_t() if len(st.data) else None, name)

    def _on_t_changed(self, t: int) -> None:
        if self.toyTimestepSlider.value() != t:
            self.toyTimestepSlider.setValue(t)
        ab = self.state.alpha_bar()
        self.toyTimestepLabel.setText(
            f"<b>t = {t}</b> of {self.state.T}  ·  ᾱ_t = {ab:.3f}<br>"
            f"√ᾱ_t = {math.sqrt(ab):.3f}  ·  √(1 − ᾱ_t) = {math.sqrt(1 - ab):.3f}")
        self._refresh_data()
        self._refresh_field()
        if self.state.samples is not None:
            self._refresh_samples()

    def _refresh_field(self, *_: object) -> None:
        kind = str(self.toyFieldCombo.currentData())
        field = self.state.field(kind)
        if field is None:
            self.toyPlot.set_field(None, None)
            return
        grid, vectors = field
        spacing = (grid[1, 0] - grid[0, 0]) if len(grid) > 1 else 1.0
        longest = float(np.max(np.linalg.norm(vectors, axis=1))) or 1.0
        scaled = vectors / longest * spacing * 0.9  # the longest arrow spans 0.9 of a grid cell
        t = max(1, self.state.t)
        self.toyPlot.set_field(grid, scaled, f"{FIELD_LABELS[kind]} at t = {t}  (longest = {longest:.2g})")

    def _refresh_loss(self) -> None:
        losses = np.asarray(self.state.losses, dtype=np.float64)
        if len(losses) == 0:
            self.lossRawItem.setData([], [])
            self.lossItem.setData([], [])
            return
        steps = np.arange(1, len(losses) + 1)
        window = max(1, min(100, len(losses) // 10))
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        self.lossRawItem.setData(steps, losses)
        self.lossItem.setData(steps[window - 1:], smooth)

    def _refresh_samples(self) -> None:
        result = self.state.samples
        if result is None:
            self.toyPlot.set_samples(None)
            self.toyPlot.set_paths(None)
            self.toyDistanceLabel.setText(self._history_html())
            return
        label = SAMPLER_LABELS[parse_sampler(result.sampler)]
        # At t > 0 the reverse chain's x_t nearest to t, beside the forward x_t: the same law when ε_θ is right.
        k = int(np.argmin(np.abs(np.asarray(result.ts) - self.state.t)))
        if result.ts[k] == 0:
            self.toyPlot.set_samples(result.x_0, f"samples x₀ ({label}, {result.steps} steps)")
        else:
            self.toyPlot.set_samples(result.frames[k], f"samples, reverse x_t at t = {result.ts[k]} ({label})")
        self.toyPlot.set_paths(result.paths[:, : k + 1])  # the trajectories so far: from x_T down to that t
        self.toyDistanceLabel.setText(self._history_html())

    def _history_html(self) -> str:
        result = self.state.samples
        lines = []
        if result is not None:
            ratio = result.sw_noise / result.sw_samples if result.sw_samples > 0 else float("inf")
            lines.append(
                f"<b>Sliced Wasserstein distance to the data:</b> samples <b>{result.sw_samples:.3f}</b>"
                f" · initial noise x_T {result.sw_noise:.3f} ({ratio:.1f}× closer)"
                f" · a fresh draw of the data {result.sw_floor:.3f} (what a perfect model would score)")
        else:
            lines.append("<b>Sliced Wasserstein distance to the data</b> appears here after sampling.")
        runs = self.state.history[-5:]
        if runs:
            parts = [f"{SAMPLER_LABELS[parse_sampler(r.sampler)]}, {r.steps} steps: {r.sw_samples:.3f}"
                     for r in reversed(runs)]
            lines.append("Latest runs: " + "  ·  ".join(parts))
        return "<br>".join(lines)

    # --- closing ----------------------------------------------------------------------------------
    def shutdown(self) -> bool:
        return self.state.shutdown()

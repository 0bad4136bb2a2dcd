"""The Forward process workspace: slide t and watch x_0 dissolve into noise, with the exact
DDPM coefficients of that t on screen.

A Qt view over `ForwardState` (state.py): the controls column (controls.py), the source x_0,
x_t in closed form and, when "Markov chain" is checked, x_t reached by t single steps
q(x_t | x_{t−1}), the coefficient table, the formula with numbers, and a plot of the
schedule with a marker at t. Every picture and number is redrawn from the state when one of
its signals says an input changed. Long Markov chains of large images are walked in short
slices on the event loop, so the slider never freezes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QHideEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.errors import UsageError
from diffusion_studio.ui.forward.coefficients import coefficient_rows, correlation, formula_html, markov_html
from diffusion_studio.ui.forward.controls import ForwardControls, offers_schedule
from diffusion_studio.ui.forward.model_views import ModelViews
from diffusion_studio.ui.forward.sources import ArrayOrigin, FileOrigin, Origin
from diffusion_studio.ui.forward.state import ForwardState, save_png
from diffusion_studio.ui.widgets.contrast import set_muted
from diffusion_studio.ui.widgets.hats import hat_font
from diffusion_studio.ui.widgets.image_view import ImageView
from diffusion_studio.ui.widgets.schedule_plot import SchedulePlot

if TYPE_CHECKING:
    from diffusion_studio.ui.models import LoadedModel

log = logging.getLogger(__name__)

MARKOV_SLICE_S = 0.015  # GUI-thread time per slice of a long Markov chain
PLAY_FRAMES = 120  # frames of one play-through from t = 1 to T
PLAY_INTERVAL_MS = 33
FILMSTRIP_TILE = 128  # filmstrip tiles are upscaled to at least this many pixels


def _panel(title: str, view: QWidget) -> tuple[QWidget, QLabel]:
    box = QWidget()
    label = QLabel(title, alignment=Qt.AlignmentFlag.AlignCenter)
    label.setTextFormat(Qt.TextFormat.RichText)
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(label)
    layout.addWidget(view, 1)
    return box, label


class ForwardWorkspace(QWidget):
    errorOccurred = Signal(str, str)  # title, one-sentence message
    statusMessage = Signal(str)
    sendToImg2Img = Signal(object, float)  # x_0 as float32 [H, W, 3] in [-1, 1] (grey: R = G = B), strength t/T

    def __init__(
        self,
        state: ForwardState | None = None,
        image_source: Callable[[], np.ndarray | None] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("forwardWorkspace")
        self.state = state or ForwardState(parent=self)
        self._image_source = image_source
        self._markov_target: int | None = None

        self.controls = ForwardControls(self.state, from_generate=image_source is not None)
        self._build_views()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.controls)
        # The views in a scroll area: at the smallest window nothing is squeezed below its size
        # (coefficient text, legend, the β̃ formula); a scroll bar appears instead.
        content = QWidget(objectName="forwardContent")
        content.setLayout(self.center)
        self.contentScroll = QScrollArea(objectName="forwardScroll", widgetResizable=True)
        self.contentScroll.setFrameShape(QFrame.Shape.NoFrame)
        self.contentScroll.setWidget(content)
        layout.addWidget(self.contentScroll, 1)

        self.markovTimer = QTimer(self, objectName="markovTimer", interval=0)
        self.markovTimer.timeout.connect(self._continue_markov)
        self.playTimer = QTimer(self, objectName="playTimer", interval=PLAY_INTERVAL_MS)
        self.playTimer.timeout.connect(self._play_tick)

        c = self.controls
        c.errorOccurred.connect(self.errorOccurred)
        c.openImageRequested.connect(self.open_image_dialog)
        c.useGenerateImageRequested.connect(self.use_generate_image)
        c.filmstripRequested.connect(self.export_filmstrip_dialog)
        c.markovCheck.toggled.connect(self._on_markov_toggled)
        st = self.state
        st.sourceChanged.connect(self._on_source_changed)
        st.scheduleChanged.connect(self._on_schedule_changed)
        st.tChanged.connect(self._on_t_changed)
        st.noiseChanged.connect(self._refresh)
        self._sync_t_range()
        self._on_source_changed()

    def _build_views(self) -> None:
        self.sourceView = ImageView(placeholder="x₀")
        self.sourceView.setObjectName("sourceImageView")
        self.forwardImageView = ImageView(placeholder="x_t")
        self.forwardImageView.setObjectName("forwardImageView")
        self.forwardImageView.setAccessibleName("Noisy image x_t")
        self.markovView = ImageView(placeholder="Computing the Markov chain…")
        self.markovView.setObjectName("markovImageView")
        for view in (self.sourceView, self.forwardImageView, self.markovView):
            view.setMinimumSize(140, 140)
        source_panel, _ = _panel("x<sub>0</sub> (source)", self.sourceView)
        forward_panel, self.forwardTitle = _panel("", self.forwardImageView)
        self.markovPanel, self.markovTitle = _panel("", self.markovView)
        self.markovPanel.setVisible(False)
        images = QHBoxLayout()
        images.addWidget(source_panel, 1)
        images.addWidget(forward_panel, 1)
        images.addWidget(self.markovPanel, 1)
        self.statsLabel = QLabel(objectName="forwardStatsLabel", alignment=Qt.AlignmentFlag.AlignCenter)

        self.timestepSlider = QSlider(Qt.Orientation.Horizontal, objectName="timestepSlider")
        self.timestepSlider.setToolTip("The timestep t of x_t (arrow keys step by one)")
        self.timestepSlider.valueChanged.connect(self.set_t)
        self.timestepSpin = QSpinBox(objectName="timestepSpin")
        self.timestepSpin.setPrefix("t = ")
        self.timestepSpin.valueChanged.connect(self.set_t)
        self.playButton = QPushButton("Play", objectName="playButton", checkable=True)
        self.playButton.setToolTip("Run t from 1 to T")
        self.playButton.toggled.connect(self._on_play_toggled)
        t_row = QHBoxLayout()
        t_row.addWidget(QLabel("t"))
        t_row.addWidget(self.timestepSlider, 1)
        t_row.addWidget(self.timestepSpin)
        t_row.addWidget(self.playButton)
        self.sendToImg2ImgButton = QPushButton("Send to img2img", objectName="sendToImg2ImgButton")
        self.sendToImg2ImgButton.setToolTip("Start the Generate tab from x₀ noised to this t: img2img with "
                                            "strength t/T")
        self.sendToImg2ImgButton.clicked.connect(self.send_to_img2img)
        t_row.addWidget(self.sendToImg2ImgButton)

        self.formulaLabel = QLabel(objectName="formulaLabel", textFormat=Qt.TextFormat.RichText)
        self.markovFormulaLabel = QLabel(objectName="markovFormulaLabel", textFormat=Qt.TextFormat.RichText)
        for label in (self.formulaLabel, self.markovFormulaLabel):
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        table = QGroupBox("Coefficients at t")
        grid = QGridLayout(table)
        grid.setHorizontalSpacing(10)
        self.coefficientLabels: dict[str, QLabel] = {}
        for row, (key, symbol, _value, meaning) in enumerate(coefficient_rows(self.state.coefficients())):
            name = QLabel(symbol, textFormat=Qt.TextFormat.RichText)
            right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
            value = QLabel(objectName=f"{key}Value", alignment=right)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setMinimumWidth(value.fontMetrics().horizontalAdvance("0.0000000e-00"))
            hint = QLabel(meaning, objectName=f"{key}Hint", textFormat=Qt.TextFormat.RichText)
            set_muted(hint)  # secondary, yet ≥ 4.5:1 against the background (Qt's disabled grey is not)
            name.setObjectName(f"{key}Symbol")
            grid.addWidget(name, row, 0)
            grid.addWidget(value, row, 1)
            grid.addWidget(hint, row, 2)
            self.coefficientLabels[key] = value
        table.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Preferred)
        self.schedulePlot = SchedulePlot(self.state.schedule, self.state.t)
        bottom = QHBoxLayout()
        bottom.addWidget(table)
        bottom.addWidget(self.schedulePlot, 1)

        self.center = QVBoxLayout()
        self.center.setContentsMargins(0, 0, 0, 0)
        self.center.addLayout(images, 3)
        self.center.addWidget(self.statsLabel)
        self.center.addLayout(t_row)
        self.center.addWidget(self.formulaLabel)
        self.center.addWidget(self.markovFormulaLabel)
        # The schedule and the loaded model's views share the space under the pictures, as tabs.
        schedule_page = QWidget(objectName="schedulePage")
        schedule_page.setLayout(bottom)
        bottom.setContentsMargins(0, 6, 0, 0)  # as wide as before the tabs: no style margins at the sides
        self.modelViews = ModelViews(self.state, self)
        self.modelViews.matchModelRequested.connect(self.match_model)
        self.modelPredictionView = self.modelViews.prediction
        self.posteriorView = self.modelViews.posterior
        self.detailTabs = QTabWidget(objectName="forwardDetailTabs")
        self.detailTabs.setDocumentMode(True)
        self.detailTabs.addTab(schedule_page, "Coefficients and schedule")
        self.detailTabs.addTab(self.modelPredictionView, "Model prediction x̂₀")
        self.detailTabs.addTab(self.posteriorView, "Posterior: q vs pθ")
        self.detailTabs.tabBar().setFont(hat_font(self.detailTabs.tabBar().font()))
        self.center.addWidget(self.detailTabs, 3)

    def sizeHint(self) -> QSize:
        return QSize(1200, 760)

    # --- t ---------------------------------------------------------------------------------
    def t(self) -> int:
        return self.state.t

    def set_t(self, t: int) -> None:
        """Show x_t for this t (clamped to 1..T); slider and spin box follow the state."""
        self.state.set_t(max(1, min(int(t), self.state.T)))

    def _on_t_changed(self, t: int) -> None:
        for widget in (self.timestepSlider, self.timestepSpin):
            if widget.value() != t:
                widget.blockSignals(True)
                widget.setValue(t)
                widget.blockSignals(False)
        self._refresh()

    def _sync_t_range(self) -> None:
        T = self.state.T
        for widget in (self.timestepSlider, self.timestepSpin):
            widget.blockSignals(True)
            widget.setRange(1, T)
            widget.setValue(self.state.t)
            widget.blockSignals(False)
        self.timestepSlider.setPageStep(max(1, T // 20))

    # --- source ----------------------------------------------------------------------------
    def open_image(self, path: Path | str) -> bool:
        """Use an image file as x_0; a dialog (errorOccurred) if it cannot be read."""
        return self._load(FileOrigin(Path(path)))

    def open_image_dialog(self) -> None:
        target, _ = QFileDialog.getOpenFileName(
            self, "Open image", str(Path.home()), "Images (*.png *.jpg *.jpeg *.bmp *.webp *.gif)"
        )
        if target:
            self.open_image(target)

    def use_generate_image(self) -> bool:
        image = self._image_source() if self._image_source else None
        if image is None:
            self.statusMessage.emit("The Generate tab shows no image yet; generate one first.")
            return False
        return self._load(ArrayOrigin(np.array(image, copy=True)))

    def _load(self, origin: Origin) -> bool:
        try:
            self.state.load(origin, self.controls.source_size())
        except UsageError as exc:
            self.errorOccurred.emit("Cannot use this image", str(exc))
            return False
        return True

    def _on_source_changed(self) -> None:
        self.sourceView.set_image(self.state.source)
        self._refresh()

    # --- schedule and noise ----------------------------------------------------------------
    def set_schedule(self, kind: str, T: int | None = None) -> None:
        """Pick a schedule (and T) as the user would in the form."""
        self.controls.set_schedule(kind, T)

    def _on_schedule_changed(self) -> None:
        self.schedulePlot.set_schedule(self.state.schedule)
        self._sync_t_range()
        self._refresh()

    def new_noise(self) -> None:
        self.state.new_noise()

    def _on_markov_toggled(self, on: bool) -> None:
        self.markovPanel.setVisible(on)
        self._refresh()

    def markov_enabled(self) -> bool:
        return self.controls.markovCheck.isChecked()

    def markov_pending(self) -> bool:
        """True while a long Markov chain is still being walked to the current t."""
        return self._markov_target is not None

    # --- rendering -------------------------------------------------------------------------
    def _refresh(self) -> None:
        state = self.state
        c = state.coefficients()
        x_t = state.x_t()
        self.forwardImageView.set_image(state.image())
        self.forwardTitle.setText(f"x<sub>t</sub>, closed form q(x<sub>t</sub> | x<sub>0</sub>) · t = {c.t}")
        self.statsLabel.setText(
            f"corr(x_t, x₀) = {correlation(x_t, state.x_0):.3f}   ·   "
            f"signal √ᾱ_t = {c.sqrt_alpha_bar:.4f}   ·   noise √(1−ᾱ_t) = {c.sqrt_one_minus_alpha_bar:.4f}"
        )
        for key, _symbol, value, _meaning in coefficient_rows(c):
            self.coefficientLabels[key].setText(value)
        self.formulaLabel.setText(formula_html(c))
        self.markovFormulaLabel.setText(markov_html(c))
        self.schedulePlot.set_t(c.t)
        if self.markov_enabled():
            self._markov_target = c.t
            self._continue_markov()
        else:
            self._markov_target = None
            self.markovTimer.stop()

    def _continue_markov(self) -> None:
        target = self._markov_target
        if target is None:
            self.markovTimer.stop()
            return
        x = self.state.markov_advance(target, MARKOV_SLICE_S)
        if x is None:
            self.markovTitle.setText(f"Markov chain: step {self.state.markov_position()} of {target}…")
            if not self.markovTimer.isActive():
                self.markovTimer.start()
            return
        self.markovTimer.stop()
        self._markov_target = None
        self.markovView.set_image(self.state.markov_image(target))
        self.markovTitle.setText(f"x<sub>t</sub> after {target} Markov steps q(x<sub>t</sub> | x<sub>t−1</sub>)")

    # --- the loaded model ------------------------------------------------------------------
    def set_model(self, model: LoadedModel | None, reason: str | None = None) -> None:
        """The model whose x̂₀ and p_θ the model tabs show (None: `reason` says why there is none)."""
        self.modelViews.set_model(model, reason)

    def match_model(self) -> None:
        """x₀ at the model's image size and channels (grey for a 1-channel model) and the model's
        schedule, so the model can be asked about x_t."""
        model = self.modelViews.model()
        if model is None:
            return
        b = model.bundle
        try:
            self.state.set_channels(b.channels)
            self.controls.add_size(b.image_size)  # a size off the menu (say 48) joins it
            self.controls.sizeCombo.setCurrentIndex(self.controls.sizeCombo.findData(b.image_size))
            if offers_schedule(b.schedule):
                self.controls.set_schedule(b.schedule.kind.value, b.schedule.T)
            else:  # e.g. diffusers' linear β ends at T ≠ 1000: exactly the model's ᾱ_t
                self.state.use_schedule(b.schedule)
        except UsageError as exc:
            self.errorOccurred.emit("Model prediction", str(exc))

    def send_to_img2img(self) -> None:
        """Emit x₀ (float32 [H, W, 3] in [−1, 1]) and strength t/T for the Generate tab's img2img."""
        x_0 = self.state.x_0
        image = np.ascontiguousarray(np.moveaxis(np.repeat(x_0, 3 // x_0.shape[0], axis=0), 0, -1))
        self.sendToImg2Img.emit(image, self.state.t / self.state.T)

    # --- play ------------------------------------------------------------------------------
    def _on_play_toggled(self, on: bool) -> None:
        if on:
            if self.state.t >= self.state.T:
                self.set_t(1)
            self.playButton.setText("Pause")
            self.playTimer.start()
        else:
            self.playButton.setText("Play")
            self.playTimer.stop()

    def _play_tick(self) -> None:
        if self._markov_target is not None:
            return  # let the Markov chain catch up first
        step = max(1, self.state.T // PLAY_FRAMES)
        self.set_t(self.state.t + step)
        if self.state.t >= self.state.T:
            self.playButton.setChecked(False)

    # --- filmstrip -------------------------------------------------------------------------
    def export_filmstrip(self, path: Path | str) -> Path:
        """x₀ and x_t at 8 evenly spaced t as one PNG (upscaled so small images stay visible)."""
        size = self.state.source.shape[0]
        return save_png(self.state.filmstrip(), path, scale=max(1, FILMSTRIP_TILE // size))

    def export_filmstrip_dialog(self) -> None:
        target, _ = QFileDialog.getSaveFileName(
            self, "Export filmstrip", str(Path.home() / "forward-process.png"), "PNG (*.png)"
        )
        if not target:
            return
        path = Path(target) if target.lower().endswith(".png") else Path(target + ".png")
        try:
            self.export_filmstrip(path)
        except UsageError as exc:
            self.errorOccurred.emit("Export filmstrip", str(exc))
            return
        self.statusMessage.emit(f"Filmstrip written to {path}.")

    # --- lifetime --------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the play and Markov timers (window closing)."""
        self.playButton.setChecked(False)
        self.playTimer.stop()
        self.markovTimer.stop()
        self._markov_target = None
        self.modelViews.shutdown()

    def hideEvent(self, event: QHideEvent) -> None:
        self.playButton.setChecked(False)  # no animation behind another tab
        super().hideEvent(event)

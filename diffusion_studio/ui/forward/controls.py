"""The left column of the Forward process workspace: source image, noise schedule, noise.

A view over `ForwardState`: edits go straight into the state (a new schedule, a new Shapes
example, another size, new noise) and the widgets follow the state's signals. Actions that
need a dialog or another tab (open an image, use the Generate image, export) are signals the
workspace handles.
"""

from __future__ import annotations

import functools

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.core.schedule import Schedule, ScheduleKind, make_schedule
from diffusion_studio.errors import UsageError
from diffusion_studio.ui.forward.sources import DEFAULT_SIZE, SOURCE_SIZES
from diffusion_studio.ui.forward.state import T_MAX, ForwardState

SCHEDULES = (("linear", "Linear (DDPM)"), ("cosine", "Cosine (Improved DDPM)"))
MODEL_SCHEDULE = "model"  # the schedule menu's entry for a loaded model's own schedule
CHANNELS = ((3, "RGB (3 channels)"), (1, "Grey (1 channel)"))


def same_schedule(a: Schedule, b: Schedule) -> bool:
    return a.T == b.T and bool(np.allclose(a.alphas_cumprod, b.alphas_cumprod, rtol=1e-9, atol=0))


@functools.lru_cache(maxsize=8)  # asked on every slider move; a Schedule hashes by identity
def offers_schedule(schedule: Schedule) -> bool:
    """Whether the schedule menu can make this schedule (linear or cosine, their own β ends)."""
    kind = schedule.kind.value
    if kind not in dict(SCHEDULES) or not 2 <= schedule.T <= T_MAX:
        return False
    return same_schedule(make_schedule(kind, schedule.T), schedule)


class ForwardControls(QWidget):
    errorOccurred = Signal(str, str)  # title, one sentence
    openImageRequested = Signal()
    useGenerateImageRequested = Signal()
    filmstripRequested = Signal()

    def __init__(self, state: ForwardState, from_generate: bool = False, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("forwardControls")
        self.setFixedWidth(264)
        self.state = state

        source = QGroupBox("Source image x₀")
        self.sourceLabel = QLabel(objectName="sourceLabel", wordWrap=True)
        self.sourceLabel.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.shapesButton = QPushButton("New Shapes example", objectName="shapesExampleButton")
        self.shapesButton.setToolTip("A random image from the Shapes training set")
        self.shapesButton.clicked.connect(self.new_shapes_example)
        self.fromGenerateButton = QPushButton("Use the Generate image", objectName="fromGenerateButton")
        self.fromGenerateButton.setToolTip("Noise the image shown in the Generate tab")
        self.fromGenerateButton.clicked.connect(self.useGenerateImageRequested)
        self.fromGenerateButton.setVisible(from_generate)
        self.openImageButton = QPushButton("Open image…", objectName="openImageButton")
        self.openImageButton.setToolTip("Any PNG or JPEG, resized and centre-cropped to the size below")
        self.openImageButton.clicked.connect(self.openImageRequested)
        self.sizeCombo = QComboBox(objectName="sourceSizeCombo")
        for size in SOURCE_SIZES:
            self.sizeCombo.addItem(f"{size} × {size}", size)
        self.sizeCombo.setCurrentIndex(self.sizeCombo.findData(DEFAULT_SIZE))
        self.sizeCombo.currentIndexChanged.connect(self._on_size_changed)
        self.channelsCombo = QComboBox(objectName="sourceChannelsCombo")
        for channels, label in CHANNELS:
            self.channelsCombo.addItem(label, channels)
        self.channelsCombo.setToolTip("Grey: x₀ is the image's luma in one channel, as a 1-channel model sees it")
        self.channelsCombo.currentIndexChanged.connect(self._on_channels_changed)
        size_row = QFormLayout()
        size_row.addRow("Size", self.sizeCombo)
        size_row.addRow("Channels", self.channelsCombo)
        source_layout = QVBoxLayout(source)
        source_layout.addWidget(self.sourceLabel)
        for button in (self.shapesButton, self.fromGenerateButton, self.openImageButton):
            source_layout.addWidget(button)
        source_layout.addLayout(size_row)

        schedule = QGroupBox("Noise schedule")
        self.scheduleCombo = QComboBox(objectName="scheduleCombo")
        for value, label in SCHEDULES:
            self.scheduleCombo.addItem(label, value)
        self.scheduleCombo.setToolTip("β_t linear from 1e-4 to 0.02 (DDPM) or from a cosine ᾱ_t (Improved DDPM)")
        self.scheduleCombo.currentIndexChanged.connect(self._on_schedule_edited)
        self.stepsSpin = QSpinBox(objectName="diffusionStepsSpin", minimum=2, maximum=T_MAX)
        self.stepsSpin.setToolTip("T, the number of diffusion steps")
        self.stepsSpin.setKeyboardTracking(False)
        self.stepsSpin.valueChanged.connect(self._on_schedule_edited)
        form = QFormLayout(schedule)
        form.addRow("Schedule", self.scheduleCombo)
        form.addRow("T", self.stepsSpin)

        noise = QGroupBox("Noise ε ~ N(0, I)")
        self.seedLabel = QLabel(objectName="noiseSeedLabel")
        self.newNoiseButton = QPushButton("New noise", objectName="newNoiseButton")
        self.newNoiseButton.setToolTip("Draw another ε (the same ε is used for every t, so scrubbing is smooth)")
        self.newNoiseButton.clicked.connect(lambda: self.state.new_noise())
        self.markovCheck = QCheckBox("Markov chain: t single steps", objectName="markovCheck")
        self.markovCheck.setToolTip("Also show x_t reached by t steps of q(x_t | x_{t−1}); same distribution, "
                                    "other noise")
        noise_layout = QVBoxLayout(noise)
        noise_row = QHBoxLayout()
        noise_row.addWidget(self.seedLabel, 1)
        noise_row.addWidget(self.newNoiseButton)
        noise_layout.addLayout(noise_row)
        noise_layout.addWidget(self.markovCheck)

        self.filmstripButton = QPushButton("Export filmstrip…", objectName="filmstripButton")
        self.filmstripButton.setToolTip("A PNG of x₀ and x_t at 8 evenly spaced t")
        self.filmstripButton.clicked.connect(self.filmstripRequested)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (source, schedule, noise):
            layout.addWidget(widget)
        layout.addWidget(self.filmstripButton)
        layout.addStretch(1)

        self._model_schedule = state.schedule  # the menu's "The model's" entry, once one is shown
        state.sourceChanged.connect(self._show_source)
        state.scheduleChanged.connect(self._show_schedule)
        state.noiseChanged.connect(self._show_seed)
        self._show_source()
        self._show_schedule()
        self._show_seed()

    # --- the state -> the widgets ----------------------------------------------------------
    def _show_source(self) -> None:
        size = self.state.source_size
        h, w = self.state.source.shape[:2]
        grey = ", grey" if self.state.channels == 1 else ""
        self.sourceLabel.setText(f"{self.state.source_name}\n{w} × {h} pixels{grey}")
        self.add_size(size)
        for combo, value in ((self.sizeCombo, size), (self.channelsCombo, self.state.channels)):
            index = combo.findData(value)
            if index >= 0 and index != combo.currentIndex():
                combo.blockSignals(True)
                combo.setCurrentIndex(index)
                combo.blockSignals(False)

    def add_size(self, size: int) -> None:
        """Offer `size` (a model's own, say 48) in the size menu, in order, if it is not there yet."""
        if self.sizeCombo.findData(size) >= 0:
            return
        at = sum(1 for i in range(self.sizeCombo.count()) if int(self.sizeCombo.itemData(i)) < size)
        self.sizeCombo.blockSignals(True)
        self.sizeCombo.insertItem(at, f"{size} × {size}", size)
        self.sizeCombo.blockSignals(False)

    def _show_schedule(self) -> None:
        schedule = self.state.schedule
        combo = self.scheduleCombo
        if not offers_schedule(schedule):  # a model's own schedule: its own menu entry
            self._model_schedule = schedule
            if combo.findData(MODEL_SCHEDULE) < 0:
                combo.blockSignals(True)
                combo.addItem("", MODEL_SCHEDULE)
                combo.blockSignals(False)
            index, b = combo.findData(MODEL_SCHEDULE), schedule.betas
            combo.setItemText(index, f"Model's β {b[0]:.3g}–{b[-1]:.3g}")
            combo.setItemData(index, f"The loaded model's own {schedule.kind.value} schedule: β from {b[0]:.6g} "
                              f"to {b[-1]:.6g}, exactly its ᾱ_t", Qt.ItemDataRole.ToolTipRole)
        value = self.state.kind.value if offers_schedule(schedule) else MODEL_SCHEDULE
        for widget, setter in ((self.scheduleCombo, lambda: self.scheduleCombo.setCurrentIndex(
                self.scheduleCombo.findData(value))),
                               (self.stepsSpin, lambda: self.stepsSpin.setValue(self.state.T))):
            widget.blockSignals(True)
            setter()
            widget.blockSignals(False)

    def _show_seed(self, *_args: object) -> None:
        self.seedLabel.setText(f"seed {self.state.seed}")

    # --- edits -> the state ----------------------------------------------------------------
    def source_size(self) -> int:
        """The size the user chose for x_0 (images are resized and centre-cropped to it)."""
        return int(self.sizeCombo.currentData() or DEFAULT_SIZE)

    def new_shapes_example(self) -> None:
        try:
            self.state.new_shapes_example(self.source_size())
        except UsageError as exc:
            self.errorOccurred.emit("Cannot use this image", str(exc))

    def _on_size_changed(self, _index: int) -> None:
        try:
            self.state.set_source_size(self.source_size())
        except UsageError as exc:
            self.errorOccurred.emit("Cannot use this image", str(exc))

    def _on_channels_changed(self, _index: int) -> None:
        self.state.set_channels(int(self.channelsCombo.currentData()))

    def _on_schedule_edited(self, *_args: object) -> None:
        kind, T = str(self.scheduleCombo.currentData()), int(self.stepsSpin.value())
        try:
            if kind == MODEL_SCHEDULE:  # the model's schedule, or its kind and β ends at another T
                own = self._model_schedule
                if own.T == T:
                    self.state.use_schedule(own)
                elif own.kind is ScheduleKind.COSINE:
                    self.state.use_schedule(make_schedule(own.kind, T))
                else:
                    self.state.use_schedule(make_schedule(own.kind, T, float(own.betas[0]), float(own.betas[-1])))
                return
            self.state.set_schedule(kind, T)
        except UsageError as exc:
            self.errorOccurred.emit("Noise schedule", str(exc))

    def set_schedule(self, kind: str, T: int | None = None) -> bool:
        """Pick a schedule (and T) as the user would in the form; False for an unknown schedule."""
        if self.scheduleCombo.findData(kind) < 0:
            self.errorOccurred.emit("Noise schedule", f"Unknown schedule '{kind}'; use linear or cosine.")
            return False
        try:
            self.state.set_schedule(kind, self.state.T if T is None else T)
        except UsageError as exc:
            self.errorOccurred.emit("Noise schedule", str(exc))
            return False
        return True

"""The left column of the Forward process workspace: source image, noise schedule, noise.

A view over `ForwardState`: edits go straight into the state (a new schedule, a new Shapes
example, another size, new noise) and the widgets follow the state's signals. Actions that
need a dialog or another tab (open an image, use the Generate image, export) are signals the
workspace handles.
"""

from __future__ import annotations

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

from diffusion_studio.errors import UsageError
from diffusion_studio.ui.forward.sources import DEFAULT_SIZE, SOURCE_SIZES
from diffusion_studio.ui.forward.state import T_MAX, ForwardState

SCHEDULES = (("linear", "Linear (DDPM)"), ("cosine", "Cosine (Improved DDPM)"))


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
        size_row = QFormLayout()
        size_row.addRow("Size", self.sizeCombo)
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
        self.sourceLabel.setText(f"{self.state.source_name}\n{w} × {h} pixels")
        index = self.sizeCombo.findData(size)
        if index >= 0 and index != self.sizeCombo.currentIndex():
            self.sizeCombo.blockSignals(True)
            self.sizeCombo.setCurrentIndex(index)
            self.sizeCombo.blockSignals(False)

    def _show_schedule(self) -> None:
        for widget, setter in ((self.scheduleCombo, lambda: self.scheduleCombo.setCurrentIndex(
                self.scheduleCombo.findData(self.state.kind.value))),
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

    def _on_schedule_edited(self, *_args: object) -> None:
        try:
            self.state.set_schedule(str(self.scheduleCombo.currentData()), int(self.stepsSpin.value()))
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

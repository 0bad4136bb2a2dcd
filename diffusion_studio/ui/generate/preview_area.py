"""The central image area: live preview, caption, trajectory scrubber and progress bar.

It shows either a `Frame` of a run (live, or scrubbed from the recorded trajectory) in
the chosen `PreviewMode`, or a still image (a history entry). Rendering numpy frames
into the view happens here, on the GUI thread.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.ui.formatting import format_seconds
from diffusion_studio.ui.generate.previews import Frame, PreviewMode, render
from diffusion_studio.ui.generate.step_decoder import StepDecoder
from diffusion_studio.ui.generate.trajectory import Trajectory
from diffusion_studio.ui.generate.worker import Progress
from diffusion_studio.ui.widgets.hats import hat_font
from diffusion_studio.ui.widgets.image_view import ImageView

# The side-by-side panels, left to right (render(frame, PreviewMode.SIDE)).
SIDE_LABELS = ("x_t", "x̂₀", "ε̂")
DECODE_DELAY_MS = 150  # a latent step is VAE-decoded once the slider rests this long on it
DECODED_NOTE = " · VAE decode"


def progress_text(progress: Progress) -> str:
    """"12/50 · 35.2 steps/s · ETA 1.1 s" (no ETA once done)."""
    text = f"{progress.done}/{progress.count} · {progress.steps_per_s:.1f} steps/s"
    if progress.done < progress.count:
        text += f" · ETA {format_seconds(progress.eta_s)}"
    return text


def caption_field() -> QLineEdit:
    """The "x̂₀ predicted at t = 731 · step 12/50" caption: read-only, selectable, centred, no frame.

    A QLabel would do, but every QLabel.setText asks for a new layout, and a layout pass
    climbs to the main window: at 30 previews per second that was most of a preview's
    cost. A line edit's size does not depend on its text, so setText only repaints it.
    """
    field = QLineEdit(objectName="captionLabel", readOnly=True, frame=False)
    field.setAlignment(Qt.AlignmentFlag.AlignCenter)
    field.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
    field.setStyleSheet("QLineEdit#captionLabel { background: transparent; }")
    field.setAccessibleName("Preview caption")
    return field


class PreviewArea(QWidget):
    modeChanged = Signal(object)  # PreviewMode
    smoothChanged = Signal(bool)
    exportTrajectoryRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("previewArea")
        self._frame: Frame | None = None
        self._trajectory: Trajectory | None = None

        self.previewModeCombo = QComboBox(objectName="previewModeCombo")
        for mode in PreviewMode:
            self.previewModeCombo.addItem(mode.label, mode.value)
        self.previewModeCombo.setToolTip("What the preview shows during and after a run")
        self.previewModeCombo.currentIndexChanged.connect(self._on_mode_changed)
        self.previewModeCombo.setFont(hat_font(self.previewModeCombo.font()))  # x̂₀, ε̂ with their hats
        self.smoothCheck = QCheckBox("Smooth zoom", objectName="smoothZoomCheck")
        self.smoothCheck.setToolTip("Bilinear zoom instead of crisp nearest-neighbour pixels")
        self.smoothCheck.toggled.connect(self._on_smooth_toggled)
        top = QHBoxLayout()
        top.addWidget(QLabel("Show"))
        top.addWidget(self.previewModeCombo)
        top.addStretch(1)
        top.addWidget(self.smoothCheck)

        self.previewView = ImageView(placeholder="Type a prompt and click Generate.")
        self.previewView.setObjectName("previewView")
        self.previewView.setAccessibleName("Preview")
        self.captionLabel = caption_field()
        self.captionLabel.setFont(hat_font(self.captionLabel.font()))

        self.trajectorySlider = QSlider(Qt.Orientation.Horizontal, objectName="trajectorySlider")
        self.trajectorySlider.setEnabled(False)
        self.trajectorySlider.setToolTip("Scrub through the recorded steps of the last run")
        self.trajectorySlider.valueChanged.connect(self._on_scrub)
        # A latent run's step: the linear-map preview at once, the full VAE decode when the slider rests.
        self.stepDecoder = StepDecoder(self)
        self.stepDecoder.decoded.connect(self._on_decoded)
        self._decodeTimer = QTimer(self, singleShot=True, interval=DECODE_DELAY_MS)
        self._decodeTimer.timeout.connect(self._decode_current)
        self._decoding: Frame | None = None  # the frame whose decode was asked for last
        self._shown_decoded = False  # the frame on screen is a latent step's full decode
        self.exportTrajectoryButton = QPushButton("Export trajectory…", objectName="exportTrajectoryButton")
        self.exportTrajectoryButton.setEnabled(False)
        self.exportTrajectoryButton.setToolTip("Save the run as an animated GIF or a PNG filmstrip")
        self.exportTrajectoryButton.clicked.connect(self.exportTrajectoryRequested)
        scrub = QHBoxLayout()
        scrub.addWidget(QLabel("Trajectory"))
        scrub.addWidget(self.trajectorySlider, 1)
        scrub.addWidget(self.exportTrajectoryButton)

        self.progressBar = QProgressBar(objectName="progressBar")
        self.progressBar.setTextVisible(True)
        self.reset_progress()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.previewView, 1)
        layout.addWidget(self.captionLabel)
        layout.addLayout(scrub)
        layout.addWidget(self.progressBar)

    # --- options ---------------------------------------------------------------------------
    def mode(self) -> PreviewMode:
        return PreviewMode(self.previewModeCombo.currentData())

    def set_mode(self, mode: PreviewMode) -> None:
        self.previewModeCombo.setCurrentIndex(self.previewModeCombo.findData(mode.value))

    def set_smooth(self, smooth: bool) -> None:
        self.smoothCheck.setChecked(smooth)
        self.previewView.set_smooth(smooth)

    def _on_mode_changed(self, _index: int) -> None:
        if self._frame is not None:
            self.show_frame(self._frame, self._shown_decoded)  # the picture and its caption follow the mode
        self.modeChanged.emit(self.mode())

    def _on_smooth_toggled(self, smooth: bool) -> None:
        self.previewView.set_smooth(smooth)
        self.smoothChanged.emit(smooth)

    # --- content ---------------------------------------------------------------------------
    def current_frame(self) -> Frame | None:
        return self._frame

    def show_frame(self, frame: Frame, decoded: bool = False) -> None:
        """Show one step of a run in the current mode, with its caption (`decoded`: a latent step's full decode)."""
        self._frame, self._shown_decoded = frame, decoded
        mode = self.mode()
        self.previewView.set_image(render(frame, mode))
        self.previewView.set_panel_labels(SIDE_LABELS if mode is PreviewMode.SIDE else ())
        self.captionLabel.setText(frame.caption(mode) + (DECODED_NOTE if decoded else ""))

    def show_image(self, image: np.ndarray | None, caption: str = "") -> None:
        """Show a still image (a history entry), or nothing."""
        self._frame = None
        self.previewView.set_panel_labels(())
        self.previewView.set_image(image)
        self.captionLabel.setText(caption)

    def show_message(self, text: str) -> None:
        """Empty the view and show `text` in it (no model, cancelled, …)."""
        self.show_image(None)
        self.previewView.set_placeholder(text)

    def begin_run(self) -> None:
        self.set_trajectory(None)
        self.reset_progress()
        self.progressBar.setFormat("Starting…")
        self.previewView.set_placeholder("Encoding the prompt…")

    def set_trajectory(self, trajectory: Trajectory | None) -> None:
        """Enable scrubbing through a finished run's steps (slider at the final step)."""
        self._trajectory = trajectory if trajectory is not None and len(trajectory) else None
        self._decodeTimer.stop()
        self.stepDecoder.invalidate()
        enabled = self._trajectory is not None
        self.trajectorySlider.blockSignals(True)
        self.trajectorySlider.setRange(0, len(self._trajectory) - 1 if self._trajectory is not None else 0)
        self.trajectorySlider.setValue(self.trajectorySlider.maximum())
        self.trajectorySlider.blockSignals(False)
        self.trajectorySlider.setEnabled(enabled)
        self.exportTrajectoryButton.setEnabled(enabled)

    def trajectory(self) -> Trajectory | None:
        return self._trajectory

    def _on_scrub(self, value: int) -> None:
        if self._trajectory is not None and 0 <= value < len(self._trajectory):
            frame = self._trajectory[value]
            self.show_frame(frame)
            self.stepDecoder.invalidate()  # a decode of the step left behind is stale now
            if self._trajectory.can_decode(frame):
                self._decodeTimer.start()

    def _decode_current(self) -> None:
        """The slider rests on a latent step: decode it in the worker thread (latest wins)."""
        frame, trajectory = self._frame, self._trajectory
        if frame is not None and trajectory is not None and trajectory.can_decode(frame):
            self._decoding = frame
            self.stepDecoder.request(trajectory, frame)

    def _on_decoded(self, token: int, frame: Frame) -> None:
        """A full decode arrived: shown if it is the latest request and its step is still on screen."""
        current = self._frame
        if token == self.stepDecoder.latest and current is not None and current is self._decoding:
            self.show_frame(frame, decoded=True)

    # --- progress --------------------------------------------------------------------------
    def reset_progress(self) -> None:
        self.progressBar.setRange(0, 1)
        self.progressBar.setValue(0)
        self.progressBar.setFormat("Ready")

    def set_progress(self, progress: Progress) -> None:
        self.progressBar.setRange(0, progress.count)
        self.progressBar.setValue(progress.done)
        self.progressBar.setFormat(progress_text(progress))

    def set_status(self, text: str) -> None:
        """Text in the progress bar once a run ended (done, cancelled, failed)."""
        self.progressBar.setFormat(text)

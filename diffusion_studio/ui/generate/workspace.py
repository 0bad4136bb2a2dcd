"""The Generate workspace: settings column | preview area | history, over one `GenerateState`.

The state holds the settings, the model and the run; this widget lays out the three views
and routes the state's run signals to them (frames to the preview, finished images to the
history). Errors go out as `errorOccurred` (the window shows them as dialogs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QScrollArea, QSplitter, QVBoxLayout, QWidget

from diffusion_studio.core.params import check_strength
from diffusion_studio.errors import UsageError
from diffusion_studio.ui.formatting import format_seconds
from diffusion_studio.ui.generate.history import HistoryEntry, HistoryStore
from diffusion_studio.ui.generate.history_panel import HistoryPanel
from diffusion_studio.ui.generate.init_image import InitImage
from diffusion_studio.ui.generate.preview_area import PreviewArea
from diffusion_studio.ui.generate.settings_panel import SettingsPanel
from diffusion_studio.ui.generate.state import GenerateState
from diffusion_studio.ui.generate.trajectory import export_trajectory
from diffusion_studio.ui.generate.worker import RunResult
from diffusion_studio.ui.models import LoadedModel
from diffusion_studio.ui.widgets.image_view import read_image_array

log = logging.getLogger(__name__)


class GenerateWorkspace(QWidget):
    errorOccurred = Signal(str, str)  # title, one-sentence message
    runStarted = Signal()
    runFinished = Signal(object)  # RunResult
    runEnded = Signal()  # the worker thread has stopped (after finished, cancelled or failed)
    statusMessage = Signal(str)

    def __init__(self, store: HistoryStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("generateWorkspace")
        self.state = GenerateState(store, self)
        self.controller = self.state.controller

        self.settingsPanel = SettingsPanel(self.state)
        self.previewArea = PreviewArea()
        self.historyPanel = HistoryPanel(store)

        scroll = QScrollArea(objectName="settingsScroll")
        scroll.setWidget(self.settingsPanel)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setMinimumWidth(self.settingsPanel.minimumWidth() + 16)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, objectName="generateSplitter")
        column = QWidget(objectName="settingsColumn")
        column_layout = QVBoxLayout(column)
        column_layout.setContentsMargins(0, 0, 0, 0)
        column_layout.addWidget(scroll, 1)
        column_layout.addWidget(self.settingsPanel.actionBar)  # Generate stays in view at any height
        self.splitter.addWidget(column)
        self.splitter.addWidget(self.previewArea)
        self.splitter.addWidget(self.historyPanel)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.setSizes([310, 620, 260])
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.splitter)

        self.settingsPanel.generateRequested.connect(self.generate)
        self.settingsPanel.cancelRequested.connect(self.cancel)
        self.historyPanel.entrySelected.connect(self._on_history_selected)
        self.historyPanel.reuseRequested.connect(self.reuse_entry)
        self.historyPanel.errorOccurred.connect(lambda msg: self.errorOccurred.emit("History", msg))
        self.settingsPanel.initImageBox.errorOccurred.connect(self.errorOccurred)
        self.previewArea.exportTrajectoryRequested.connect(self.export_trajectory_dialog)
        st = self.state
        st.refused.connect(self.errorOccurred)
        st.runStarted.connect(self._on_started)
        st.preview.connect(self.previewArea.show_frame)
        st.progress.connect(self.previewArea.set_progress)
        st.finished.connect(self._on_finished)
        st.cancelled.connect(self._on_cancelled)
        st.failed.connect(self._on_failed)
        st.idle.connect(self.runEnded)

    def sizeHint(self) -> QSize:
        return QSize(1200, 760)

    @property
    def preview_hz(self) -> float:
        """Previews per second at most during a run (tests raise it to see every step)."""
        return self.state.preview_hz

    @preview_hz.setter
    def preview_hz(self, hz: float) -> None:
        self.state.preview_hz = hz

    # --- model -----------------------------------------------------------------------------
    def model(self) -> LoadedModel | None:
        return self.state.model

    def set_model(self, model: LoadedModel | None, message: str = "") -> None:
        """Use `model` for the next runs (None: no model; `message` says why in the view)."""
        self.state.set_model(model)
        if model is None:
            self.previewArea.show_message(message or "No model is loaded. Open a model bundle.")
        elif self.previewArea.current_frame() is None and self.previewArea.previewView.image_array() is None:
            self.previewArea.previewView.set_placeholder(
                f"Type a prompt and click Generate.\n{model.name}: {model.bundle.image_size}×"
                f"{model.bundle.image_size}, {model.bundle.T} diffusion steps."
            )

    def is_running(self) -> bool:
        return self.state.is_running

    def selected_image(self) -> np.ndarray | None:
        """One image, uint8 [H, W, C]: the selected history entry, else the first image of the frame
        on show (never the batch grid with its transparent gaps), else the still image on show."""
        entry = self.historyPanel.selected_entry()
        if entry is not None:
            try:
                return read_image_array(entry.path, "The history image", alpha=False)
            except UsageError:
                log.warning("Cannot read the history image %s.", entry.path)
        frame = self.previewArea.current_frame()
        if frame is not None:
            return np.array(frame.x0_pred[0], copy=True)
        return self.previewArea.previewView.image_array()

    # --- img2img ---------------------------------------------------------------------------
    def set_init_image(self, image: np.ndarray | PIL.Image.Image, strength: float, source: str = "") -> None:
        """Start the next runs from `image` at `strength` (img2img), e.g. the Forward workspace's x₀.

        `image`: a float32 array [H, W, C] in [-1, 1], a uint8 array [H, W(, C)] or a PIL image,
        of any size (fitted to the model when a run starts, like the CLI's --init-image).
        `source` names it in the form and the PNG metadata ("forward process"). A bad array or
        strength raises UsageError with one sentence.
        """
        init = InitImage.from_image(image, source)
        self.state.update(strength=check_strength(strength))
        self.settingsPanel.initImageBox.loader.latest += 1  # a file still being read does not replace it
        self.state.set_init_image(init)

    def clear_init_image(self) -> None:
        """Back to text-to-image."""
        self.settingsPanel.initImageBox.clear()

    # --- runs ------------------------------------------------------------------------------
    def generate(self) -> None:
        """Start a run with the form's settings (an unlocked seed is re-rolled first)."""
        if self.state.generate():
            self.previewArea.begin_run()  # the buttons change on `runStarted`, from the thread

    def cancel(self) -> None:
        if self.state.cancel():
            self.previewArea.set_status("Cancelling…")

    def shutdown(self) -> bool:
        """Stop a run in flight (window closing); True once no thread is left."""
        return self.state.shutdown()

    def _on_started(self) -> None:
        self.historyPanel.clear_selection()
        self.runStarted.emit()

    def _on_finished(self, result: RunResult) -> None:
        self.previewArea.set_trajectory(result.trajectory)
        if result.trajectory:
            self.previewArea.show_frame(result.trajectory[len(result.trajectory) - 1])
        self.previewArea.set_status(
            f"Done · {result.steps} steps in {format_seconds(result.elapsed_s)} · {result.steps_per_s:.1f} steps/s"
        )
        if result.save_error:
            self.historyPanel.reload()  # show whatever was written before the error
            self.errorOccurred.emit("Could not save the image", result.save_error)
        else:
            self.historyPanel.add_entries(result.saved)
        for note in result.notes:
            self.statusMessage.emit(note)
        self.runFinished.emit(result)

    def _on_cancelled(self) -> None:
        self.previewArea.set_status("Cancelled · nothing was saved")
        self.statusMessage.emit("Generation cancelled.")

    def _on_failed(self, message: str) -> None:
        self.previewArea.set_status("Failed")
        self.errorOccurred.emit("Generation failed", message)

    # --- history ---------------------------------------------------------------------------
    def _on_history_selected(self, entry: HistoryEntry | None) -> None:
        if entry is None:
            return
        try:
            image = read_image_array(entry.path, "The history image")
        except UsageError as exc:
            self.errorOccurred.emit("History", str(exc))
            return
        self.previewArea.set_trajectory(None)
        self.previewArea.show_image(image, f"{entry.title} · {entry.subtitle}")

    def apply_metadata(self, metadata: dict[str, Any], source: str = "the image") -> bool:
        """Fill the form from PNG metadata; a dialog (errorOccurred) if it holds no settings.

        Values the form cannot take as they are (a sampler we do not have, steps beyond the
        model's T) never reject the drop: the rest is filled in and the status bar says what
        was kept or clamped.
        """
        try:
            notes = self.state.restore(metadata)
        except UsageError as exc:
            self.errorOccurred.emit("Cannot reuse settings", f"{source}: {exc}")
            return False
        self.statusMessage.emit("; ".join([f"Settings restored from {source}", *notes]) + ".")
        return True

    def reuse_entry(self, entry: HistoryEntry) -> None:
        self.apply_metadata(entry.metadata, entry.path.name)

    # --- trajectory ------------------------------------------------------------------------
    def export_trajectory_dialog(self) -> None:
        trajectory = self.previewArea.trajectory()
        if trajectory is None:
            return
        target, chosen = QFileDialog.getSaveFileName(
            self,
            "Export trajectory",
            str(Path.home() / "trajectory.gif"),
            "Animated GIF (*.gif);;PNG filmstrip (*.png)",
        )
        if not target:
            return
        path = Path(target)
        if path.suffix.lower() not in (".gif", ".png"):
            path = path.with_suffix(".png" if "png" in chosen.lower() else ".gif")
        try:
            export_trajectory(trajectory, path, self.previewArea.mode())
        except UsageError as exc:
            self.errorOccurred.emit("Export trajectory", str(exc))
            return
        self.statusMessage.emit(f"Trajectory exported to {path}.")

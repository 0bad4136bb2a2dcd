"""The Generate workspace: settings column | preview area | history, and the run logic.

It turns the form into a `GenerationRequest`, runs it in the worker thread, follows the
worker's signals (buttons, preview, progress), writes finished images to the history
and keeps the trajectory for scrubbing and export. Errors go out as `errorOccurred`
(the window shows them as dialogs).
"""

from __future__ import annotations

import datetime
import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QScrollArea, QSplitter, QWidget

from diffusion_studio.core.images import to_uint8
from diffusion_studio.errors import UsageError
from diffusion_studio.inference.pipeline import GenerationRequest, Pipeline
from diffusion_studio.ui.generate.state import GenerationSettings
from diffusion_studio.ui.generate.history import HistoryEntry, HistoryStore
from diffusion_studio.ui.generate.history_panel import HistoryPanel
from diffusion_studio.ui.models import LoadedModel
from diffusion_studio.ui.formatting import format_seconds
from diffusion_studio.ui.generate.preview_area import PreviewArea
from diffusion_studio.ui.generate.previews import Frame
from diffusion_studio.ui.generate.trajectory import export_trajectory
from diffusion_studio.ui.generate.settings_panel import SettingsPanel
from diffusion_studio.ui.generate.worker import MAX_PREVIEW_HZ, GenerationController, Progress, RunResult

log = logging.getLogger(__name__)


def request_from_settings(settings: GenerationSettings) -> GenerationRequest:
    return GenerationRequest(
        prompt=settings.prompt,
        negative_prompt=settings.negative_prompt,
        sampler=settings.sampler,
        steps=settings.steps,
        guidance=settings.guidance,
        seed=settings.seed,
        batch=settings.batch,
    )


def save_run(store: HistoryStore, pipeline: Pipeline, device_label: str, result: RunResult) -> list[HistoryEntry]:
    """Write every image of a finished run to the history with its full metadata.

    Runs in the worker thread. Image i of a batch records seed + i, so it can be made
    again alone.
    """
    request = pipeline.last_request
    if request is None:
        return []
    created = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    entries: list[HistoryEntry] = []
    for i, image in enumerate(to_uint8(result.x_0)):
        metadata: dict[str, Any] = pipeline.image_metadata(request, i, result.elapsed_s)
        metadata["created"] = created
        metadata["device"] = device_label
        entries.append(store.add(image, metadata, index=i))
    return entries


class GenerateWorkspace(QWidget):
    errorOccurred = Signal(str, str)  # title, one-sentence message
    runStarted = Signal()
    runFinished = Signal(object)  # RunResult
    runEnded = Signal()  # the worker thread has stopped (after finished, cancelled or failed)
    statusMessage = Signal(str)

    def __init__(self, store: HistoryStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("generateWorkspace")
        self._model: LoadedModel | None = None
        self.preview_hz = MAX_PREVIEW_HZ  # previews per second at most (coalesced in the worker)

        self.settingsPanel = SettingsPanel()
        self.previewArea = PreviewArea()
        self.historyPanel = HistoryPanel(store)
        self.controller = GenerationController(self)

        scroll = QScrollArea(objectName="settingsScroll")
        scroll.setWidget(self.settingsPanel)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setMinimumWidth(self.settingsPanel.minimumWidth() + 16)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, objectName="generateSplitter")
        self.splitter.addWidget(scroll)
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
        self.previewArea.exportTrajectoryRequested.connect(self.export_trajectory_dialog)
        c = self.controller
        c.started.connect(self._on_started)
        c.preview.connect(self._on_preview)
        c.progress.connect(self._on_progress)
        c.finished.connect(self._on_finished)
        c.cancelled.connect(self._on_cancelled)
        c.failed.connect(self._on_failed)
        c.idle.connect(self._on_idle)
        self._update_buttons()

    def sizeHint(self) -> QSize:
        return QSize(1200, 760)

    # --- model -----------------------------------------------------------------------------
    def model(self) -> LoadedModel | None:
        return self._model

    def set_model(self, model: LoadedModel | None, message: str = "") -> None:
        """Use `model` for the next runs (None: no model; `message` says why in the view)."""
        self._model = model
        if model is None:
            self.previewArea.show_message(message or "No model is loaded. Open a model bundle.")
        elif self.previewArea.current_frame() is None and self.previewArea.previewView.image_array() is None:
            self.previewArea.previewView.set_placeholder(
                f"Type a prompt and click Generate.\n{model.name}: {model.bundle.image_size}×"
                f"{model.bundle.image_size}, {model.bundle.T} diffusion steps."
            )
        self._update_buttons()

    def is_running(self) -> bool:
        return self.controller.is_running

    def _update_buttons(self) -> None:
        self.settingsPanel.set_running(self.controller.is_running, can_generate=self._model is not None)

    # --- runs ------------------------------------------------------------------------------
    def generate(self) -> None:
        """Start a run with the form's settings (an unlocked seed is re-rolled first)."""
        if self.controller.is_running:
            return
        if self._model is None:
            self.errorOccurred.emit("No model", "Open a model bundle before generating.")
            return
        settings = self.settingsPanel.settings().for_next_run()
        self.settingsPanel.set_seed(settings.seed)
        try:
            request = self._model.pipeline.resolve(request_from_settings(settings.validated()))
        except UsageError as exc:
            self.errorOccurred.emit("Cannot generate", str(exc))
            return
        self.previewArea.begin_run()
        finish = functools.partial(
            save_run, self.historyPanel.store, self._model.pipeline, self._model.provider_info.device_label
        )
        self.controller.start(self._model.pipeline, request, self.preview_hz, finish)
        # The buttons change on the worker's `started` signal, not here.

    def cancel(self) -> None:
        if self.controller.is_running:
            self.previewArea.set_status("Cancelling…")
            self.controller.cancel()

    def shutdown(self) -> bool:
        """Stop a run in flight (window closing); True once no thread is left."""
        return self.controller.shutdown()

    def _on_started(self) -> None:
        self.historyPanel.clear_selection()
        self.runStarted.emit()
        self._update_buttons()

    def _on_preview(self, frame: Frame) -> None:
        self.previewArea.show_frame(frame)

    def _on_progress(self, progress: Progress) -> None:
        self.previewArea.set_progress(progress)

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
        if self._model is not None:
            for note in self._model.pipeline.notes:
                self.statusMessage.emit(note)
        self.runFinished.emit(result)

    def _on_cancelled(self) -> None:
        self.previewArea.set_status("Cancelled · nothing was saved")
        self.statusMessage.emit("Generation cancelled.")

    def _on_failed(self, message: str) -> None:
        self.previewArea.set_status("Failed")
        self.errorOccurred.emit("Generation failed", message)

    def _on_idle(self) -> None:
        self._update_buttons()
        self.runEnded.emit()

    # --- history ---------------------------------------------------------------------------
    def _on_history_selected(self, entry: HistoryEntry | None) -> None:
        if entry is None:
            return
        try:
            with Image.open(entry.path) as im:
                image = np.asarray(im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB"))
        except OSError as exc:
            self.errorOccurred.emit("History", f"Cannot open {entry.path} ({exc}).")
            return
        self.previewArea.set_trajectory(None)
        self.previewArea.show_image(image, f"{entry.title} · {entry.subtitle}")

    def apply_metadata(self, metadata: dict[str, Any], source: str = "the image") -> bool:
        """Fill the form from PNG metadata; a dialog (errorOccurred) if it holds no settings.

        Values the form cannot take as they are (a sampler we do not have, steps beyond the
        model's T) never reject the drop: the rest is filled in and the status bar says what
        was kept or clamped.
        """
        T = self._model.bundle.T if self._model is not None else None
        try:
            settings, notes = self.settingsPanel.settings().restore(metadata, T)
        except UsageError as exc:
            self.errorOccurred.emit("Cannot reuse settings", f"{source}: {exc}")
            return False
        self.settingsPanel.set_settings(settings)
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

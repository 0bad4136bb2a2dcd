"""The Train workspace: train a text-conditioned ε-predicting U-Net and export it, from the app.

The form column (form_panel.py) | what the run shows (view.py), over one `TrainState`
(state.py) that owns the training and export processes. The views follow the state's
signals: its events drive the loss plot, the progress bar, the latest sample grid and the
checkpoint path; its sentences go to the message line (and errors to `errorOccurred`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QSettings, QSize, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QHBoxLayout, QMessageBox, QScrollArea, QWidget

from diffusion_studio.errors import UsageError
from diffusion_studio.ui.train.form_panel import TrainFormPanel
from diffusion_studio.ui.train.processes import STOP_TIMEOUT_MS, PythonProcess
from diffusion_studio.ui.train.run import TrainRun, grid_step, latest_sample_grid, looks_like_noise
from diffusion_studio.ui.train.settings import TrainForm, checkpoints_in, suggest_run_dir
from diffusion_studio.ui.train.state import TrainState
from diffusion_studio.ui.train.view import TrainView
from diffusion_studio.ui.widgets.image_view import read_image_array

log = logging.getLogger(__name__)

SETTINGS_KEY = "train/form"


class TrainWorkspace(QWidget):
    errorOccurred = Signal(str, str)  # title, one sentence
    statusMessage = Signal(str)
    openBundleRequested = Signal(str)  # an exported bundle folder, for the Generate tab
    trainingFinished = Signal(str, str)  # kind (done, stopped, error), sentence
    exportFinished = Signal(bool, str)  # success, sentence

    def __init__(self, runs_dir: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("trainWorkspace")
        self.state = TrainState(self)
        self.panel = TrainFormPanel(runs_dir)
        self.view = TrainView()
        self.lossPlot = self.view.lossPlot
        self.noise_warning: QMessageBox | None = None  # the last "samples are still noise" question

        scroll = QScrollArea(objectName="trainFormScroll")
        scroll.setWidget(self.panel)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setMinimumWidth(self.panel.minimumWidth() + 16)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(scroll)
        layout.addWidget(self.view, 1)

        p = self.panel
        p.startRequested.connect(self.start_training)
        p.stopRequested.connect(self.stop_training)
        p.exportRequested.connect(self.start_export)
        p.openBundleRequested.connect(self._offer_bundle)
        p.runFolderChanged.connect(lambda _text: self._update_buttons())
        st = self.state
        st.busyChanged.connect(self._update_buttons)
        st.trainingStarted.connect(self._on_training_started)
        st.eventApplied.connect(self._on_event)
        st.trainingFinished.connect(self._on_training_finished)
        st.exportSummaryChanged.connect(self.view.exportSummaryLabel.setText)
        st.exportFinished.connect(self._on_export_finished)
        st.message.connect(self.view.show_message)
        st.logLine.connect(self.view.log)
        st.errorOccurred.connect(self.errorOccurred)
        self._update_buttons()

    def sizeHint(self) -> QSize:
        return QSize(1200, 760)

    # --- the state, for the window and tests ----------------------------------------------
    @property
    def run(self) -> TrainRun:
        return self.state.run

    @property
    def trainProcess(self) -> PythonProcess:
        return self.state.trainProcess

    @property
    def exportProcess(self) -> PythonProcess:
        return self.state.exportProcess

    def is_training(self) -> bool:
        return self.state.is_training()

    def is_exporting(self) -> bool:
        return self.state.is_exporting()

    def is_busy(self) -> bool:
        return self.state.is_busy()

    def busy_description(self) -> str:
        return self.state.busy_description()

    def shutdown(self, timeout_ms: int = STOP_TIMEOUT_MS) -> bool:
        return self.state.shutdown(timeout_ms)

    # --- the form --------------------------------------------------------------------------
    def form(self) -> TrainForm:
        return self.panel.form()

    def set_form(self, form: TrainForm) -> None:
        self.panel.set_form(form)

    def restore_settings(self, settings: QSettings) -> None:
        """The form as it was left, with its run folder: one with checkpoints is resumed, not replaced."""
        try:
            data = json.loads(str(settings.value(SETTINGS_KEY, "") or "{}"))
        except json.JSONDecodeError:
            return
        if not isinstance(data, dict) or not data:
            return
        form = TrainForm.from_dict(data)
        run = Path(form.out).expanduser() if form.out else None
        if run is not None and checkpoints_in(run):  # the same run folder: Resume continues it
            form = replace(form, resume=True)
        elif run is None or (run.is_dir() and any(run.iterdir())):  # not a run of ours: a fresh folder
            form = replace(form, out=str(suggest_run_dir(self.panel.runs_dir)), resume=False)
        else:
            form = replace(form, resume=False)
        self.panel.set_form(form)
        self._update_buttons()

    def save_settings(self, settings: QSettings) -> None:
        settings.setValue(SETTINGS_KEY, json.dumps(self.panel.form().to_dict()))

    def run_dir(self) -> Path | None:
        text = self.panel.outEdit.text().strip()
        return Path(text).expanduser() if text else None

    def _update_buttons(self) -> None:
        run_dir = self.run_dir()
        can_export = run_dir is not None and bool(checkpoints_in(run_dir))
        st = self.state
        self.panel.set_running(st.is_training(), st.is_exporting(), can_export, st.exported_bundle is not None)
        if st.is_stopping():
            self.panel.trainStopButton.setEnabled(False)  # already stopping

    # --- training --------------------------------------------------------------------------
    def start_training(self) -> bool:
        """Start `diffusion-studio train` with the form's settings; False (and a message) if refused."""
        return self.state.start_training(self.panel.form())

    def stop_training(self, timeout_ms: int = STOP_TIMEOUT_MS) -> None:
        """Ask the trainer to write a checkpoint and exit (SIGTERM; killed after the timeout)."""
        if self.state.is_training():
            self.view.progressBar.setFormat("Stopping…")
            self.state.stop_training(timeout_ms)

    def _on_training_started(self) -> None:
        self.view.starting()
        if self.state.run.losses:  # a resumed run continues its loss curve
            self.lossPlot.set_points(self.state.run.losses)

    def _on_event(self, kind: str) -> None:
        run = self.state.run
        if kind == "start":
            self.lossPlot.set_points(run.losses)
            self.view.show_progress(run)
        elif kind == "progress":
            self.view.show_loss(run)
            self.view.show_progress(run)
        elif kind == "sample" and run.sample_grid:
            problem = self.view.show_sample(Path(run.sample_grid), run.sample_step or run.step, run.sample_prompts)
            if problem:
                self.view.log(problem)
        elif kind == "checkpoint":
            self.view.show_checkpoint(run.checkpoint)

    def _on_training_finished(self, kind: str, message: str) -> None:
        self.view.show_end(self.state.run, kind)
        run_dir = self.run_dir()
        if run_dir is not None and checkpoints_in(run_dir):
            self.panel.resumeCheck.setChecked(True)  # Start now continues this run
        if kind != "error":
            self.statusMessage.emit(message)
        self.trainingFinished.emit(kind, message)

    # --- export ----------------------------------------------------------------------------
    def start_export(self, force: bool | None = None) -> bool:
        """Export the run folder's latest checkpoint to the bundle folder (asks before replacing one)."""
        if self.state.is_busy():
            return False
        run_dir, bundle = self.run_dir(), self.panel.bundle_dir()
        if run_dir is None:
            self.state.message.emit("Choose the run folder to export.", True)
            self.errorOccurred.emit("Cannot export", "Choose the run folder to export.")
            return False
        if force is None and not self._confirm_samples(run_dir):
            return False
        if force is None:
            force = False
            target = Path(bundle).expanduser()
            if bundle and target.exists():
                answer = QMessageBox.question(self, "Replace the bundle?",
                                              f"{target} already exists. Replace it with the new export?")
                if answer != QMessageBox.StandardButton.Yes:
                    return False
                force = True
        return self.state.start_export(run_dir, bundle, force=force)

    def _confirm_samples(self, run_dir: Path) -> bool:
        """If the run's latest sample grid is still noise, say so (with the grid) and ask; True: export."""
        grid = latest_sample_grid(run_dir)
        if grid is None:
            return True
        try:
            image = read_image_array(grid, "The sample grid", alpha=False)
        except UsageError:
            return True
        if not looks_like_noise(image):
            return True
        step = grid_step(grid)
        box = QMessageBox(QMessageBox.Icon.Warning, "The samples are still noise",
                          f"The latest samples (step {step if step is not None else '?'}) are still noise.",
                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setInformativeText("A model exported now draws noise too. Train longer (Resume continues the run), "
                               "or export anyway?")
        box.setObjectName("noisySamplesBox")
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.button(QMessageBox.StandardButton.Yes).setText("Export anyway")
        box.button(QMessageBox.StandardButton.No).setText("Keep training")
        pixmap = QPixmap(str(grid))
        if not pixmap.isNull():  # the grid beside the question
            box.setIconPixmap(pixmap.scaled(256, 256, Qt.AspectRatioMode.KeepAspectRatio,
                                            Qt.TransformationMode.FastTransformation))
        self.view.show_sample(grid, step or 0)
        self.noise_warning = box  # for tests
        if int(box.exec()) != QMessageBox.StandardButton.Yes.value:
            self.state.message.emit(f"Not exported: the samples at step {step} are still noise.", False)
            return False
        return True

    def _on_export_finished(self, ok: bool, message: str) -> None:
        if ok:
            self.statusMessage.emit(message)
        self.exportFinished.emit(ok, message)

    def _offer_bundle(self) -> None:
        if self.state.exported_bundle is not None:
            self.openBundleRequested.emit(str(self.state.exported_bundle))

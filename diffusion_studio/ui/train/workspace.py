"""The Train workspace: train a text-conditioned ε-predicting U-Net and export it, from the app.

The form column (form_panel.py) | what the run shows (view.py), over one `TrainState`
(state.py) that owns the training and export processes. The views follow the state's
signals: its events drive the loss plot, the progress bar, the latest EMA and raw sample
grids and the checkpoint list; its sentences go to the message line (and errors to
`errorOccurred`). Choosing a run folder shows its checkpoints and latest grids; Export writes
the selected checkpoint (else the newest) with the chosen weights.
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
from diffusion_studio.ui.train.run import (
    TrainRun,
    grid_step,
    latest_sample_grid,
    looks_like_noise,
    run_checkpoints,
    run_sample_prompts,
    sample_grid_path,
)
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
        p.runFolderChanged.connect(lambda _text: self._show_run_folder())
        self.view.exportCheckpointButton.clicked.connect(lambda: self.start_export())
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
        self._show_run_folder()

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
        self.view.exportCheckpointButton.setEnabled(not st.is_busy() and can_export)
        if st.is_stopping():
            self.panel.trainStopButton.setEnabled(False)  # already stopping

    def _show_run_folder(self) -> None:
        """The run folder's checkpoints, and (unless a run is training) its latest EMA and raw grids."""
        run_dir = self.run_dir()
        self.refresh_checkpoints()
        if self.state.is_training():
            return
        grid = latest_sample_grid(run_dir) if run_dir is not None else None
        step = grid_step(grid) if grid is not None else None
        if run_dir is None or grid is None or step is None:
            self.view.clear_samples()
            return
        raw = sample_grid_path(run_dir, step, raw=True)
        for problem in self.view.show_samples(grid, raw if raw.is_file() else None, step,
                                              run_sample_prompts(run_dir)):
            self.view.log(problem)

    def refresh_checkpoints(self) -> None:
        """List the run folder's checkpoints (after one is written, a run ends, or the folder changes)."""
        run_dir = self.run_dir()
        self.view.set_checkpoints(run_checkpoints(run_dir) if run_dir is not None else [])
        self._update_buttons()

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
            self._show_run_folder()  # and shows its last grids until the next ones arrive

    def _on_event(self, kind: str) -> None:
        run = self.state.run
        if kind == "start":
            self.lossPlot.set_points(run.losses)
            self.view.show_progress(run)
        elif kind == "progress":
            self.view.show_loss(run)
            self.view.show_progress(run)
        elif kind == "sample" and run.sample_grid:
            raw = Path(run.raw_sample_grid) if run.raw_sample_grid else None
            for problem in self.view.show_samples(Path(run.sample_grid), raw, run.sample_step or run.step,
                                                  run.sample_prompts, run.sample_columns):
                self.view.log(problem)
        elif kind == "checkpoint":
            self.view.show_checkpoint(run.checkpoint)
            self.refresh_checkpoints()

    def _on_training_finished(self, kind: str, message: str) -> None:
        self.view.show_end(self.state.run, kind)
        self.refresh_checkpoints()
        run_dir = self.run_dir()
        if run_dir is not None and checkpoints_in(run_dir):
            self.panel.resumeCheck.setChecked(True)  # Start now continues this run
        if kind != "error":
            self.statusMessage.emit(message)
        self.trainingFinished.emit(kind, message)

    # --- export ----------------------------------------------------------------------------
    def start_export(self, force: bool | None = None) -> bool:
        """Export the selected checkpoint (else the run folder's newest) with the chosen EMA or raw
        weights to the bundle folder (asks before replacing one)."""
        if self.state.is_busy():
            return False
        run_dir, bundle = self.run_dir(), self.panel.bundle_dir()
        if run_dir is None:
            self.state.message.emit("Choose the run folder to export.", True)
            self.errorOccurred.emit("Cannot export", "Choose the run folder to export.")
            return False
        chosen, weights = self.view.selected_checkpoint(), self.view.export_weights()
        if force is None and not self._confirm_samples(run_dir, chosen.step if chosen else None, weights == "raw"):
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
        return self.state.start_export(run_dir, bundle, force=force,
                                       checkpoint=chosen.path if chosen else None, weights=weights)

    def _confirm_samples(self, run_dir: Path, step: int | None = None, raw: bool = False) -> bool:
        """If the grid of the exported weights (at the chosen checkpoint's step if there is one, else the
        latest) is still noise, say so (with the grid) and ask; True: export."""
        grid = sample_grid_path(run_dir, step, raw) if step is not None else None
        if grid is None or not grid.is_file():
            grid = latest_sample_grid(run_dir, raw) or latest_sample_grid(run_dir)  # older runs: EMA grids only
        if grid is None:
            return True
        raw = grid_step(grid, raw=True) is not None
        step = grid_step(grid, raw)
        try:
            image = read_image_array(grid, "The sample grid", alpha=False)
        except UsageError:
            return True
        if not looks_like_noise(image):
            return True
        box = QMessageBox(QMessageBox.Icon.Warning, "The samples are still noise",
                          f"The {'raw weights’ ' if raw else ''}samples at step "
                          f"{step if step is not None else '?'} are still noise.",
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
        self.view.show_sample(grid, step or 0, raw=raw)
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

"""The Train workspace: train a text-conditioned ε-predicting U-Net and export it, from the app.

Training is `python -m diffusion_studio train … --json` in a child process (the GUI never
imports torch); its JSON-lines events drive the loss plot, the progress bar, the latest
sample grid and the checkpoint path. Stop sends SIGTERM, so the trainer writes a
checkpoint and exits (it is killed after a timeout). Export runs `python -m exporter`
the same way and offers the new bundle to the Generate tab.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QSettings, QSize, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QMessageBox, QScrollArea, QWidget

from diffusion_studio.errors import UsageError
from diffusion_studio.ui.train.form_panel import TrainFormPanel
from diffusion_studio.ui.train.processes import STOP_TIMEOUT_MS, PythonProcess
from diffusion_studio.ui.train.run import (
    ExportSummary,
    TrainForm,
    TrainRun,
    checkpoints_in,
    export_arguments,
    export_outcome,
    loss_history,
    parse_event,
    train_outcome,
)
from diffusion_studio.ui.train.view import TrainView

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
        self.run = TrainRun()
        self.summary = ExportSummary()
        self.stderr_lines: list[str] = []
        self.export_stderr: list[str] = []
        self.exported_bundle: Path | None = None
        self._export_target: Path | None = None
        self._run_dir: Path | None = None

        self.panel = TrainFormPanel(runs_dir)
        self.trainProcess = PythonProcess(self, "trainProcess")
        self.exportProcess = PythonProcess(self, "exportProcess")
        self.view = TrainView()
        self.lossPlot = self.view.lossPlot

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
        t = self.trainProcess
        t.started.connect(self._update_buttons)
        t.stdoutLine.connect(self._on_train_stdout)
        t.stderrLine.connect(self._on_train_stderr)
        t.finished.connect(self._on_train_finished)
        e = self.exportProcess
        e.started.connect(self._update_buttons)
        e.stdoutLine.connect(self._on_export_stdout)
        e.stderrLine.connect(self._on_export_stderr)
        e.finished.connect(self._on_export_finished)
        self._update_buttons()

    def sizeHint(self) -> QSize:
        return QSize(1200, 760)

    # --- state -----------------------------------------------------------------------------
    def is_training(self) -> bool:
        return self.trainProcess.is_running()

    def is_exporting(self) -> bool:
        return self.exportProcess.is_running()

    def is_busy(self) -> bool:
        return self.is_training() or self.is_exporting()

    def form(self) -> TrainForm:
        return self.panel.form()

    def set_form(self, form: TrainForm) -> None:
        self.panel.set_form(form)

    def restore_settings(self, settings: QSettings) -> None:
        """The form as it was left; a finished run's folder is replaced by a fresh one (unless resuming)."""
        try:
            data = json.loads(str(settings.value(SETTINGS_KEY, "") or "{}"))
        except json.JSONDecodeError:
            return
        if not isinstance(data, dict) or not data:
            return
        form = TrainForm.from_dict(data)
        run = Path(form.out).expanduser() if form.out else None
        if run is None or (not form.resume and run.is_dir() and any(run.iterdir())):
            form = replace(form, out=self.panel.form().out)
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
        training = self.is_training()
        self.panel.set_running(training, self.is_exporting(), can_export, self.exported_bundle is not None)
        if training and self.trainProcess.stop_requested:
            self.panel.trainStopButton.setEnabled(False)  # already stopping

    def _show_message(self, text: str, error: bool = False) -> None:
        self.view.show_message(text, error)

    def _log(self, line: str) -> None:
        self.view.log(line)

    # --- training --------------------------------------------------------------------------
    def start_training(self) -> bool:
        """Start `diffusion-studio train` with the form's settings; False (and a message) if refused."""
        if self.is_busy():
            return False
        form = self.panel.form()
        try:
            arguments = form.arguments()
        except UsageError as exc:
            self._fail("Cannot start training", str(exc))
            return False
        self.run = TrainRun()
        self.stderr_lines = []
        self._run_dir = Path(form.out).expanduser()
        self.view.starting()
        if form.resume:  # continue the loss curve where the run left it
            self.run.losses = loss_history(self._run_dir)
            self.lossPlot.set_points(self.run.losses)
        self._show_message(f"Training into {self._run_dir}…")
        self._log("$ python " + " ".join(arguments))
        self.trainProcess.start(arguments)
        self._update_buttons()
        return True

    def stop_training(self, timeout_ms: int = STOP_TIMEOUT_MS) -> None:
        """Ask the trainer to write a checkpoint and exit (SIGTERM; killed after the timeout)."""
        if self.is_training():
            self._show_message("Stopping: the trainer finishes its update and writes a checkpoint…")
            self.view.progressBar.setFormat("Stopping…")
            self.trainProcess.stop(timeout_ms)
            self._update_buttons()

    def _on_train_stdout(self, line: str) -> None:
        event = parse_event(line)
        if event is None:
            if line.strip():
                self._log(line)
            return
        kind = self.run.apply(event)
        run = self.run
        if kind == "start":
            run.losses = [(step, loss) for step, loss in run.losses if step <= run.start_step]
            self.lossPlot.set_points(run.losses)  # a resumed run: only the history up to its checkpoint
            self.view.show_progress(run)
            self._show_message(("Resumed" if run.start_step else "Training") + f" into {self._run_dir}…")
        elif kind == "progress":
            self.view.show_loss(run)
            self.view.show_progress(run)
        elif kind == "sample" and run.sample_grid:
            problem = self.view.show_sample(Path(run.sample_grid), run.sample_step or run.step, run.sample_prompts)
            if problem:
                self._log(problem)
        elif kind == "checkpoint":
            self.view.show_checkpoint(run.checkpoint)
            self._update_buttons()

    def _on_train_stderr(self, line: str) -> None:
        self.stderr_lines.append(line)
        del self.stderr_lines[:-200]
        if line.strip():
            self._log(line)

    def _on_train_finished(self, exit_code: int, crashed: bool) -> None:
        kind, message = train_outcome(self.run, exit_code, crashed, self.stderr_lines,
                                      self.trainProcess.stop_requested)
        self._log(f"[training process ended: exit code {exit_code}{', crashed' if crashed else ''}]")
        self.view.show_end(self.run, kind)
        if kind == "error":
            self._fail("Training failed", message)
        else:
            self._show_message(message)
            self.statusMessage.emit(message)
        self._update_buttons()
        self.trainingFinished.emit(kind, message)

    def _fail(self, title: str, message: str) -> None:
        self._show_message(message, error=True)
        self.errorOccurred.emit(title, message)

    # --- export ----------------------------------------------------------------------------
    def start_export(self, force: bool | None = None) -> bool:
        """Export the run folder's latest checkpoint to the bundle folder (asks before replacing one)."""
        if self.is_busy():
            return False
        run_dir, bundle = self.run_dir(), self.panel.bundle_dir()
        if run_dir is None:
            self._fail("Cannot export", "Choose the run folder to export.")
            return False
        target = Path(bundle).expanduser()
        if force is None:
            force = False
            if bundle and target.exists():
                answer = QMessageBox.question(self, "Replace the bundle?",
                                              f"{target} already exists. Replace it with the new export?")
                if answer != QMessageBox.StandardButton.Yes:
                    return False
                force = True
        try:
            arguments = export_arguments(run_dir, bundle, force=force)
        except UsageError as exc:
            self._fail("Cannot export", str(exc))
            return False
        self.summary = ExportSummary()
        self.export_stderr = []
        self._export_target = target
        self.exported_bundle = None
        self.view.exportSummaryLabel.setText("")
        self._show_message(f"Exporting {run_dir} to {target} (with a PyTorch vs ONNX Runtime parity check)…")
        self._log("$ python " + " ".join(arguments))
        self.exportProcess.start(arguments)
        self._update_buttons()
        return True

    def _on_export_stdout(self, line: str) -> None:
        self.summary.add(line)
        if line.strip():
            self._log(line)
        self.view.exportSummaryLabel.setText(self.summary.text())

    def _on_export_stderr(self, line: str) -> None:
        self.export_stderr.append(line)
        if line.strip():
            self._log(line)

    def _on_export_finished(self, exit_code: int, crashed: bool) -> None:
        target = self._export_target or Path()
        ok, message = export_outcome(exit_code, crashed, self.export_stderr, target)
        self._log(f"[export process ended: exit code {exit_code}{', crashed' if crashed else ''}]")
        if ok:
            self.exported_bundle = target
            self._show_message(f"{message} Click “Open in Generate” to try it.")
            self.statusMessage.emit(message)
        else:
            self._fail("Export failed", message)
        self._update_buttons()
        self.exportFinished.emit(ok, message)

    def _offer_bundle(self) -> None:
        if self.exported_bundle is not None:
            self.openBundleRequested.emit(str(self.exported_bundle))

    # --- lifetime --------------------------------------------------------------------------
    def busy_description(self) -> str:
        """What closing the window would interrupt ("" when nothing runs)."""
        if self.is_training():
            return (f"Training is running (step {self.run.step} of {self.run.steps or '…'}). "
                    "Stop it (a checkpoint is written) and quit?")
        if self.is_exporting():
            return "An export is running. Cancel it and quit? Nothing will be written."
        return ""

    def shutdown(self, timeout_ms: int = STOP_TIMEOUT_MS) -> bool:
        """Stop training (SIGTERM, then kill after the timeout) and any export; True once none runs."""
        export_ok = self.exportProcess.shutdown(2000)
        train_ok = self.trainProcess.shutdown(timeout_ms)
        return export_ok and train_ok

"""The Train workspace's state, headless (QtCore, no widgets): the training and export child
processes and what they said, with signals the views follow.

Training is `python -m diffusion_studio train … --json` (the GUI never imports torch); its
JSON-lines events are folded into `run` (a `TrainRun`) and announced with `eventApplied`.
Stop sends SIGTERM, so the trainer writes a checkpoint and exits (it is killed after a
timeout). Export runs `python -m exporter` the same way (the run folder's latest checkpoint,
or one chosen checkpoint, EMA or raw weights); its summary lines and the bundle it wrote end
up here too. Every outcome is one sentence (`message`, `trainingFinished`,
`exportFinished`).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from diffusion_studio.errors import UsageError
from diffusion_studio.ui.train.processes import STOP_TIMEOUT_MS, PythonProcess
from diffusion_studio.ui.train.run import (
    ExportSummary,
    TrainRun,
    export_outcome,
    loss_history,
    parse_event,
    train_outcome,
)
from diffusion_studio.ui.train.settings import TrainForm, export_arguments

log = logging.getLogger(__name__)

STDERR_LINES = 200  # the trainer's last stderr lines kept for the error sentence
FROZEN_NOTE = ("Training and export need PyTorch, which this desktop build leaves out: install the Python "
               "package (pip install 'diffusion-studio[export]') and train from there.")


def is_frozen() -> bool:
    """True inside the PyInstaller desktop build (packaging/), which has no PyTorch."""
    return bool(getattr(sys, "frozen", False))


WEIGHTS = ("ema", "raw")  # python -m exporter --weights


def export_source_arguments(run_dir: Path, bundle: str, force: bool = False, checkpoint: Path | None = None,
                            weights: str = "ema") -> list[str]:
    """`-m exporter SOURCE --out BUNDLE [--weights raw] [--force]`: SOURCE is the run folder (its latest
    checkpoint) or one of its checkpoints; UsageError with one sentence if it cannot be exported."""
    if weights not in WEIGHTS:
        raise UsageError(f"Unknown weights '{weights}'; use ema or raw.")
    arguments = export_arguments(run_dir, bundle, force=force)  # checks the bundle and the run
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if path.suffix != ".safetensors" or not path.is_file():
            raise UsageError(f"The checkpoint {path} is gone (only the newest ones are kept); pick another.")
        arguments[2] = str(path)  # -m exporter SOURCE …
    return arguments + (["--weights", weights] if weights != "ema" else [])


class TrainState(QObject):
    """At most one training and one export process, and everything they reported."""

    busyChanged = Signal()  # a process started, stopped, or is being stopped
    trainingStarted = Signal()  # `run` is fresh (with the loss history of a resumed run)
    eventApplied = Signal(str)  # kind of a trainer event just folded into `run`
    trainingFinished = Signal(str, str)  # kind (done, stopped, error), sentence
    exportStarted = Signal()
    exportSummaryChanged = Signal(str)  # the exporter's parity and "wrote" lines so far
    exportFinished = Signal(bool, str)  # success, sentence
    message = Signal(str, bool)  # the sentence to show now, is it an error
    errorOccurred = Signal(str, str)  # title, sentence: something failed or could not start (a dialog)
    logLine = Signal(str)  # commands, stderr, stdout that is not an event

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.run = TrainRun()
        self.run_dir: Path | None = None  # of the training process started last
        self.stderr_lines: list[str] = []
        self.summary = ExportSummary()
        self.export_stderr: list[str] = []
        self.exported_bundle: Path | None = None  # the bundle the last successful export wrote
        self._export_target: Path | None = None
        self.trainProcess = PythonProcess(self, "trainProcess")
        self.exportProcess = PythonProcess(self, "exportProcess")
        t = self.trainProcess
        t.started.connect(self.busyChanged)
        t.stdoutLine.connect(self._on_train_stdout)
        t.stderrLine.connect(self._on_train_stderr)
        t.finished.connect(self._on_train_finished)
        e = self.exportProcess
        e.started.connect(self.busyChanged)
        e.stdoutLine.connect(self._on_export_stdout)
        e.stderrLine.connect(self._on_export_stderr)
        e.finished.connect(self._on_export_finished)

    # --- state -----------------------------------------------------------------------------
    def is_training(self) -> bool:
        return self.trainProcess.is_running()

    def is_stopping(self) -> bool:
        return self.is_training() and self.trainProcess.stop_requested

    def is_exporting(self) -> bool:
        return self.exportProcess.is_running()

    def is_busy(self) -> bool:
        return self.is_training() or self.is_exporting()

    def busy_description(self) -> str:
        """What closing the window would interrupt ("" when nothing runs)."""
        if self.is_training():
            return (f"Training is running (step {self.run.step} of {self.run.steps or '…'}). "
                    "Stop it (a checkpoint is written) and quit?")
        if self.is_exporting():
            return "An export is running. Cancel it and quit? Nothing will be written."
        return ""

    def _fail(self, title: str, text: str) -> None:
        self.message.emit(text, True)
        self.errorOccurred.emit(title, text)

    # --- training --------------------------------------------------------------------------
    def start_training(self, form: TrainForm) -> bool:
        """Start `diffusion-studio train` with `form`; False (and `errorOccurred`) if the form is refused."""
        if self.is_busy():
            return False
        if is_frozen():
            self._fail("Cannot start training", FROZEN_NOTE)
            return False
        try:
            arguments = form.arguments()
        except UsageError as exc:
            self._fail("Cannot start training", str(exc))
            return False
        self.run = TrainRun()
        self.stderr_lines = []
        self.run_dir = Path(form.out).expanduser()
        if form.resume:  # continue the loss curve where the run left it
            self.run.losses = loss_history(self.run_dir)
        self.trainingStarted.emit()
        self.message.emit(f"Training into {self.run_dir}…", False)
        self.logLine.emit("$ python " + " ".join(arguments))
        self.trainProcess.start(arguments)
        self.busyChanged.emit()
        return True

    def stop_training(self, timeout_ms: int = STOP_TIMEOUT_MS) -> None:
        """Ask the trainer to write a checkpoint and exit (SIGTERM; killed after the timeout)."""
        if self.is_training():
            self.message.emit("Stopping: the trainer finishes its update and writes a checkpoint…", False)
            self.trainProcess.stop(timeout_ms)
            self.busyChanged.emit()

    def _on_train_stdout(self, line: str) -> None:
        event = parse_event(line)
        if event is None:
            if line.strip():
                self.logLine.emit(line)
            return
        run = self.run
        kind = run.apply(event)
        if kind == "start":  # a resumed run: only the history up to its checkpoint
            run.losses = [(step, loss) for step, loss in run.losses if step <= run.start_step]
            self.message.emit(("Resumed" if run.start_step else "Training") + f" into {self.run_dir}…", False)
        self.eventApplied.emit(kind)
        if kind == "checkpoint":
            self.busyChanged.emit()  # there is something to export now

    def _on_train_stderr(self, line: str) -> None:
        self.stderr_lines.append(line)
        del self.stderr_lines[:-STDERR_LINES]
        if line.strip():
            self.logLine.emit(line)

    def _on_train_finished(self, exit_code: int, crashed: bool) -> None:
        kind, text = train_outcome(self.run, exit_code, crashed, self.stderr_lines, self.trainProcess.stop_requested)
        self.logLine.emit(f"[training process ended: exit code {exit_code}{', crashed' if crashed else ''}]")
        self.message.emit(text, kind == "error")
        self.busyChanged.emit()
        self.trainingFinished.emit(kind, text)
        if kind == "error":
            self.errorOccurred.emit("Training failed", text)

    # --- export ----------------------------------------------------------------------------
    def start_export(self, run_dir: Path, bundle: str, force: bool = False, checkpoint: Path | None = None,
                     weights: str = "ema") -> bool:
        """Export the run folder's latest checkpoint (or `checkpoint`, a .safetensors file) with its
        EMA or raw `weights` to `bundle`; False (and `errorOccurred`) if refused."""
        if self.is_busy():
            return False
        if is_frozen():
            self._fail("Cannot export", FROZEN_NOTE)
            return False
        try:
            arguments = export_source_arguments(run_dir, bundle, force=force, checkpoint=checkpoint, weights=weights)
        except UsageError as exc:
            self._fail("Cannot export", str(exc))
            return False
        source = f"{checkpoint}" if checkpoint is not None else f"{run_dir}"
        if weights != "ema":
            source += f" ({weights} weights)"
        target = Path(bundle).expanduser()
        self.summary = ExportSummary()
        self.export_stderr = []
        self._export_target = target
        self.exported_bundle = None
        self.exportStarted.emit()
        self.exportSummaryChanged.emit("")
        self.message.emit(f"Exporting {source} to {target} (with a PyTorch vs ONNX Runtime parity check)…", False)
        self.logLine.emit("$ python " + " ".join(arguments))
        self.exportProcess.start(arguments)
        self.busyChanged.emit()
        return True

    def _on_export_stdout(self, line: str) -> None:
        self.summary.add(line)
        if line.strip():
            self.logLine.emit(line)
        self.exportSummaryChanged.emit(self.summary.text())

    def _on_export_stderr(self, line: str) -> None:
        self.export_stderr.append(line)
        if line.strip():
            self.logLine.emit(line)

    def _on_export_finished(self, exit_code: int, crashed: bool) -> None:
        target = self._export_target or Path()
        ok, text = export_outcome(exit_code, crashed, self.export_stderr, target)
        self.logLine.emit(f"[export process ended: exit code {exit_code}{', crashed' if crashed else ''}]")
        if ok:
            self.exported_bundle = target
        self.message.emit(f"{text} Click “Open in Generate” to try it." if ok else text, not ok)
        self.busyChanged.emit()
        self.exportFinished.emit(ok, text)
        if not ok:
            self.errorOccurred.emit("Export failed", text)

    # --- lifetime --------------------------------------------------------------------------
    def shutdown(self, timeout_ms: int = STOP_TIMEOUT_MS) -> bool:
        """Stop training (SIGTERM, then kill after the timeout) and any export; True once none runs."""
        export_ok = self.exportProcess.shutdown(2000)
        train_ok = self.trainProcess.shutdown(timeout_ms)
        return export_ok and train_ok

"""`PythonProcess`: a `python -m …` child process (QProcess) read line by line, stopped gracefully.

Training and export run in child processes so the GUI never imports torch and never
blocks. stdout and stderr arrive as whole lines (signals); `stop()` sends SIGTERM (the
trainer then writes a checkpoint and exits) and kills the process if it has not ended
after a timeout; `shutdown()` does the same synchronously when the window closes.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

import diffusion_studio

log = logging.getLogger(__name__)

STOP_TIMEOUT_MS = 30_000  # time for a SIGTERM'd trainer to finish its update and write a checkpoint


def project_root() -> Path:
    """The folder holding the `diffusion_studio` and `exporter` packages (for PYTHONPATH)."""
    return Path(diffusion_studio.__file__).resolve().parent.parent


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the child processes: passive OpenMP waits, unbuffered output, our packages importable."""
    env = dict(os.environ if base is None else base)
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # spinning OpenMP threads slow a busy machine (and the GUI) down
    env["PYTHONUNBUFFERED"] = "1"
    root = str(project_root())
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths if p != root])
    return env


class _LineBuffer:
    """Bytes in, complete decoded lines out (a partial last line waits for its newline)."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[str]:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        return [line.decode("utf-8", "replace").rstrip("\r") for line in lines]

    def flush(self) -> list[str]:
        rest, self._pending = self._pending, b""
        return [rest.decode("utf-8", "replace").rstrip("\r")] if rest.strip() else []


class PythonProcess(QObject):
    """One child `python ARGS…` at a time; its lines and its end arrive as signals."""

    started = Signal()
    stdoutLine = Signal(str)
    stderrLine = Signal(str)
    finished = Signal(int, bool)  # exit code, crashed (killed by a signal or failed to start)

    def __init__(self, parent: QObject | None = None, name: str = "process") -> None:
        super().__init__(parent)
        self.setObjectName(name)
        self._process: QProcess | None = None
        self._out = _LineBuffer()
        self._err = _LineBuffer()
        self.stop_requested = False
        # not `killTimer`: that name is QObject's method for ending a timer by its id
        self.forceKillTimer = QTimer(self, objectName=f"{name}KillTimer", singleShot=True)
        self.forceKillTimer.timeout.connect(self.kill)

    # --- state -----------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self._process is not None and self._process.state() != QProcess.ProcessState.NotRunning

    def pid(self) -> int | None:
        return int(self._process.processId()) if self.is_running() and self._process else None

    # --- control ---------------------------------------------------------------------------
    def start(self, arguments: list[str]) -> None:
        """Run `sys.executable ARGUMENTS` in the project root with the child environment."""
        if self.is_running():
            raise RuntimeError(f"{self.objectName()} is already running.")
        self._out, self._err = _LineBuffer(), _LineBuffer()
        self.stop_requested = False
        process = QProcess(self)
        environment = QProcessEnvironment()
        for key, value in child_environment().items():
            environment.insert(key, value)
        process.setProcessEnvironment(environment)
        process.setWorkingDirectory(str(project_root()))
        process.readyReadStandardOutput.connect(self._read_stdout)
        process.readyReadStandardError.connect(self._read_stderr)
        process.started.connect(self.started)
        process.finished.connect(self._on_finished)
        process.errorOccurred.connect(self._on_error)
        self._process = process
        log.info("starting %s %s", sys.executable, " ".join(arguments))
        process.start(sys.executable, arguments)

    def stop(self, timeout_ms: int = STOP_TIMEOUT_MS) -> None:
        """SIGTERM now; SIGKILL if the process is still running after `timeout_ms`."""
        if not self.is_running() or self._process is None:
            return
        self.stop_requested = True
        self._process.terminate()
        self.forceKillTimer.start(timeout_ms)

    def kill(self) -> None:
        if self.is_running() and self._process is not None:
            log.warning("%s did not stop in time; killing it", self.objectName())
            self._process.kill()

    def shutdown(self, timeout_ms: int = STOP_TIMEOUT_MS) -> bool:
        """Stop and wait (blocking) until the process has ended; True when it has."""
        process = self._process
        if process is None or not self.is_running():
            return True
        self.stop_requested = True
        process.terminate()
        if not process.waitForFinished(timeout_ms):
            process.kill()
            process.waitForFinished(5000)
        self.forceKillTimer.stop()
        return not self.is_running()

    # --- QProcess --------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        if self._process is not None:
            for line in self._out.feed(bytes(self._process.readAllStandardOutput().data())):
                self.stdoutLine.emit(line)

    def _read_stderr(self) -> None:
        if self._process is not None:
            for line in self._err.feed(bytes(self._process.readAllStandardError().data())):
                self.stderrLine.emit(line)

    def _drain(self) -> None:
        self._read_stdout()
        self._read_stderr()
        for line in self._out.flush():
            self.stdoutLine.emit(line)
        for line in self._err.flush():
            self.stderrLine.emit(line)

    def _on_finished(self, exit_code: int, status: QProcess.ExitStatus) -> None:
        self.forceKillTimer.stop()
        self._drain()
        process, self._process = self._process, None
        if process is not None:
            process.deleteLater()
        self.finished.emit(int(exit_code), status == QProcess.ExitStatus.CrashExit)

    def _on_error(self, error: QProcess.ProcessError) -> None:
        if error != QProcess.ProcessError.FailedToStart:
            return  # crashes also arrive as finished(CrashExit)
        self.forceKillTimer.stop()
        process, self._process = self._process, None
        message = process.errorString() if process is not None else "unknown reason"
        if process is not None:
            process.deleteLater()
        self.stderrLine.emit(f"error: Python could not be started ({message}).")
        self.finished.emit(-1, True)

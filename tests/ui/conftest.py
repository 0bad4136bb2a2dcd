"""UI test set-up: isolated QSettings and data folder, and a guard against leaked threads/timers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSettings, QStandardPaths, QThread, QTimer  # noqa: E402
from shiboken6 import isValid  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own QSettings file and history folder under tmp_path."""
    QStandardPaths.setTestModeEnabled(True)
    settings_dir = tmp_path / "settings"
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(settings_dir))
    monkeypatch.setenv("DIFFUSION_STUDIO_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


@pytest.fixture(autouse=True)
def no_leaked_threads_or_timers(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest):
    """Fail a test that leaves a QThread running or a QTimer active once it has finished.

    Set up before pytest-qt's qtbot, so this teardown runs after qtbot closed its widgets.
    """
    threads: list[QThread] = []
    timers: list[QTimer] = []
    thread_start, timer_start = QThread.start, QTimer.start

    def start_thread(self: QThread, *args: object) -> None:
        threads.append(self)
        thread_start(self, *args)

    def start_timer(self: QTimer, *args: object) -> None:
        timers.append(self)
        timer_start(self, *args)

    monkeypatch.setattr(QThread, "start", start_thread)
    monkeypatch.setattr(QTimer, "start", start_timer)
    yield
    if "qapp" in request.fixturenames or "qtbot" in request.fixturenames:
        from PySide6.QtWidgets import QApplication

        deadline = time.monotonic() + 2.0  # let deleteLater / queued finished signals run
        while time.monotonic() < deadline and any(isValid(t) and t.isRunning() for t in threads):
            QApplication.processEvents()
            time.sleep(0.01)
        QApplication.processEvents()
    running = [t.objectName() or repr(t) for t in threads if isValid(t) and t.isRunning()]
    active = [t.objectName() or repr(t) for t in timers if isValid(t) and t.isActive()]
    assert not running, f"test left QThreads running: {running}"
    assert not active, f"test left QTimers active: {active}"

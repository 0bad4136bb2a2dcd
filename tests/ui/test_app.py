"""run_app and the excepthook: uncaught exceptions become a logged dialog, never a crash."""

from __future__ import annotations

import logging
import sys

from PySide6.QtWidgets import QApplication, QMessageBox

from diffusion_studio.ui import app as app_module


def test_excepthook_logs_and_shows_a_dialog(qtbot, monkeypatch, caplog) -> None:
    shown: list[QMessageBox] = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: shown.append(box) or 0)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    app_module.install_excepthook()
    try:
        raise RuntimeError("boom in a slot")
    except RuntimeError:
        exc_info = sys.exc_info()
    with caplog.at_level(logging.ERROR):
        sys.excepthook(*exc_info)
    assert "Uncaught exception" in caplog.text and "boom in a slot" in caplog.text
    assert len(shown) == 1 and "boom in a slot" in shown[0].text()
    assert "RuntimeError" in shown[0].detailedText()


def test_run_app_builds_the_window_and_runs_the_event_loop(qtbot, monkeypatch, tiny_bundle) -> None:
    from diffusion_studio.ui.main_window import MainWindow

    windows: list[MainWindow] = []
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(app_module, "setup_logging", lambda: None)
    monkeypatch.setattr(MainWindow, "show", lambda self: (windows.append(self), qtbot.addWidget(self)))
    monkeypatch.setattr(QApplication, "exec", lambda self: 0)
    assert app_module.run_app(model_path=str(tiny_bundle)) == 0
    assert len(windows) == 1 and windows[0].model().name == "tiny"
    assert QApplication.instance().applicationName() == "Diffusion Studio"

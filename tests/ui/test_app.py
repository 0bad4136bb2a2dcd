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


def test_missing_xcb_cursor_is_named_with_its_package(monkeypatch) -> None:
    # The plugin's dlopen fails on the first missing library; the rest of Qt's xcb list is checked too.
    missing = {"libxcb-cursor.so.0"}
    monkeypatch.setattr(app_module, "_missing_library",
                        lambda path: "libxcb-cursor.so.0" if path.endswith("libqxcb.so") else
                        (path if path in missing else None))
    problem = app_module.platform_problem({"DISPLAY": ":0"}, "Linux")
    assert problem is not None and "\n" not in problem and ". " not in problem  # one sentence
    assert "libxcb-cursor.so.0" in problem and problem.endswith("sudo apt-get install libxcb-cursor0")
    missing.add("libxcb-icccm.so.4")  # a bare container lacks more than the cursor library
    problem = app_module.platform_problem({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}, "Linux")
    assert problem is not None and problem.endswith("sudo apt-get install libxcb-cursor0 libxcb-icccm4")


def test_no_display_is_one_sentence_and_other_platforms_need_no_xcb(monkeypatch) -> None:
    monkeypatch.setattr(app_module, "_missing_library", lambda path: "libxcb-cursor.so.0")
    problem = app_module.platform_problem({}, "Linux")
    assert problem is not None and "DISPLAY" in problem and "QT_QPA_PLATFORM=offscreen" in problem
    assert "\n" not in problem and ". " not in problem
    assert "DISPLAY is not set" in (app_module.platform_problem({"QT_QPA_PLATFORM": "xcb"}, "Linux") or "")
    assert app_module.platform_problem({"QT_QPA_PLATFORM": "offscreen"}, "Linux") is None
    assert app_module.platform_problem({"WAYLAND_DISPLAY": "wayland-0"}, "Linux") is None
    assert app_module.platform_problem({}, "Windows") is None
    monkeypatch.setattr(app_module, "_missing_library", lambda path: None)  # everything loads
    assert app_module.platform_problem({"DISPLAY": ":0"}, "Linux") is None


def test_debian_package_names_follow_the_soname() -> None:
    assert app_module._debian_package("libxcb-cursor.so.0") == "libxcb-cursor0"
    assert app_module._debian_package("libxkbcommon-x11.so.0") == "libxkbcommon-x11-0"
    assert app_module._debian_package("libfoo.so.3.1") == "libfoo3"


def test_run_app_names_the_platform_problem_before_creating_anything(monkeypatch, capsys) -> None:
    sentence = "The window cannot open: install it with: sudo apt-get install libxcb-cursor0"
    monkeypatch.setattr(app_module, "platform_problem", lambda: sentence)
    monkeypatch.setattr(app_module, "install_excepthook", lambda *a: (_ for _ in ()).throw(AssertionError))
    monkeypatch.setattr(QApplication, "exec", lambda self: (_ for _ in ()).throw(AssertionError))
    assert app_module.run_app() == 2
    assert capsys.readouterr().err == f"error: {sentence}\n"

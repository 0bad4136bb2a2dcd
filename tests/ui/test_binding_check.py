"""run_app refuses a Qt binding that would abort the interpreter in long use, with one sentence."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QApplication

from diffusion_studio.ui import app as app_module


def test_known_leaking_binding_on_python_311_is_named_with_the_fix() -> None:
    problem = app_module.qt_binding_problem("6.12.0", (3, 11))
    assert problem is not None and "\n" not in problem and ". " not in problem  # one sentence
    assert "PySide6 6.12.0" in problem and "pip install 'PySide6-Essentials==6.11.3'" in problem


def test_immortal_singletons_make_any_binding_safe() -> None:
    assert app_module.qt_binding_problem("6.12.0", (3, 12)) is None
    assert app_module.qt_binding_problem("6.12.0", (3, 13)) is None


def test_installed_binding_passes_the_probe() -> None:
    # pyproject pins a clean binding on CPython < 3.12; the probe itself finds no leak.
    assert not app_module._binding_leaks()
    assert app_module.qt_binding_problem() is None


def test_run_app_refuses_before_building_anything(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(app_module, "qt_binding_problem", lambda: "PySide6 9.9 leaks; install another.")
    monkeypatch.setattr(QApplication, "exec", lambda self: pytest.fail("the event loop must not start"))
    monkeypatch.setattr(app_module, "install_excepthook", lambda *a: pytest.fail("must refuse first"))
    assert app_module.run_app() == 2
    assert capsys.readouterr().err == "error: PySide6 9.9 leaks; install another.\n"

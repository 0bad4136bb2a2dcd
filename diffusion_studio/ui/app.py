"""`run_app()`: the QApplication, logging, an excepthook that shows a dialog, the main window."""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import platform
import re
import sys
import threading
import traceback
from logging.handlers import RotatingFileHandler
from pathlib import Path
from types import TracebackType

import PySide6
from PySide6.QtCore import QLibraryInfo, QObject, QThread, QTimer, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QMessageBox

from diffusion_studio.ui.persistence import APPLICATION, ORGANIZATION, data_dir

log = logging.getLogger("diffusion_studio")

LOG_FILE = "diffusion-studio.log"
QUIT_AFTER_ENV = "DIFFUSION_STUDIO_QUIT_AFTER_MS"  # close the window this long after it is shown (smoke tests)

# Qt bindings measured to drop a reference to None (void calls) and True (Signal.emit, connect)
# per call on CPython < 3.12, where the interpreter then aborts ("bool_dealloc"/"none_dealloc").
LEAKING_PYSIDE6 = frozenset({"6.12.0"})
QT_BINDING_FIX = "pip install 'PySide6-Essentials==6.11.3'"
PROBE_CALLS = 32


# Qt 6's xcb platform plugin links these system libraries (doc.qt.io/qt-6/linux-requirements.html);
# a desktop Debian/Ubuntu usually lacks only libxcb-cursor0. Soname -> Debian/Ubuntu package.
XCB_LIBRARIES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb.so.1": "libxcb1",
}
HEADLESS_HINT = "set QT_QPA_PLATFORM=offscreen to run it headless"


def _missing_library(path: str) -> str | None:
    """dlopen `path` (it and the libraries it needs); the first missing soname, '' if it fails otherwise."""
    try:
        ctypes.CDLL(path)
    except OSError as error:
        found = re.search(r"([\w.+-]+\.so[\w.]*): cannot open shared object file", str(error))
        return found.group(1) if found else ""
    return None


def _debian_package(soname: str) -> str:
    """libfoo.so.1 -> libfoo1, libfoo-x11.so.0 -> libfoo-x11-0 (Debian's naming), or a known name."""
    if soname in XCB_LIBRARIES:
        return XCB_LIBRARIES[soname]
    name, _, version = soname.partition(".so")
    version = version.lstrip(".").split(".")[0]
    return (f"{name}-{version}" if name[-1:].isdigit() else f"{name}{version}").lower()


def platform_problem(env: dict[str, str] | None = None, system: str | None = None) -> str | None:
    """One sentence if Qt could not open a window here (Qt would abort the process), else None.

    Checked before the QApplication exists: Qt's failure to load its platform plugin is fatal.
    """
    env = dict(os.environ) if env is None else env
    if (platform.system() if system is None else system) != "Linux":
        return None
    chosen = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip().lower()
    wayland = bool(env.get("WAYLAND_DISPLAY"))
    if chosen not in ("", "xcb") or (chosen == "" and wayland):
        return None  # offscreen, wayland, vnc, ...: nothing of xcb's is needed
    if not env.get("DISPLAY"):
        if chosen == "xcb":
            return f"QT_QPA_PLATFORM=xcb but DISPLAY is not set: start it in a desktop session, or {HEADLESS_HINT}"
        return f"There is no display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set): " \
               f"start it in a desktop session, or {HEADLESS_HINT}"
    plugin = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms" / "libqxcb.so"
    if not plugin.is_file():
        return None  # a Qt without xcb: let Qt say what it has
    first = _missing_library(str(plugin))
    if first is None:
        return None
    missing = [first] if first else []
    missing += [name for name in XCB_LIBRARIES if name not in missing and _missing_library(name) is not None]
    if not missing:
        return None  # it failed for a reason we cannot name; Qt will say it
    packages = " ".join(dict.fromkeys(_debian_package(name) for name in missing))
    return (f"The window cannot open: Qt's xcb platform plugin needs the system "
            f"librar{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)}; on Debian/Ubuntu install "
            f"{'them' if len(missing) > 1 else 'it'} with: sudo apt-get install {packages}")


class _Probe(QObject):
    ping = Signal()


def _binding_leaks() -> bool:
    """True if void calls or signal emits lose references to None or True (a few dozen calls)."""
    probe = _Probe()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # garbage freed mid-probe would release references too
    try:
        none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
        for _ in range(PROBE_CALLS):
            probe.setObjectName("probe")  # void
            probe.ping.emit()  # returns True
        lost = max(none_before - sys.getrefcount(None), true_before - sys.getrefcount(True))
    finally:
        if gc_was_enabled:
            gc.enable()
    return lost >= PROBE_CALLS // 2


def qt_binding_problem(version: str | None = None, python: tuple[int, int] | None = None) -> str | None:
    """One sentence if the installed PySide6 would abort this interpreter in long use, else None.

    From CPython 3.12 on None/True/False are immortal (PEP 683), so a leaking binding is harmless.
    """
    version = PySide6.__version__ if version is None else version
    major, minor = (sys.version_info.major, sys.version_info.minor) if python is None else python
    if (major, minor) >= (3, 12) or platform.python_implementation() != "CPython":
        return None
    if version not in LEAKING_PYSIDE6 and not _binding_leaks():
        return None
    return (f"PySide6 {version} loses references to None and True on Python {major}.{minor} and would "
            f"crash the app in long use; install a fixed binding with: {QT_BINDING_FIX}")


def setup_logging() -> Path | None:
    """Log to stderr and to a rotating file in the data folder; returns the file's path."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        path = data_dir() / LOG_FILE
        handler = RotatingFileHandler(path, maxBytes=1_000_000, backupCount=2, encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return path


def install_excepthook(log_path: Path | None = None) -> None:
    """Uncaught exceptions are logged with their traceback and shown in a dialog, never a crash."""

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        log.error("Uncaught exception", exc_info=(kind, value, tb))
        app = QApplication.instance()
        if app is None or QThread.currentThread() is not app.thread():
            return  # only the GUI thread may show dialogs; the log has it
        box = QMessageBox(QMessageBox.Icon.Critical, "Unexpected error", f"Something went wrong: {value}")
        where = f"\n\nThe details are in {log_path}." if log_path else ""
        box.setInformativeText(f"The app keeps running; your images are safe.{where}")
        box.setDetailedText("".join(traceback.format_exception(kind, value, tb)))
        box.exec()

    sys.excepthook = hook
    threading.excepthook = lambda args: hook(args.exc_type, args.exc_value, args.exc_traceback)  # type: ignore[arg-type]


def run_app(model_path: str | None = None, argv: list[str] | None = None) -> int:
    """Start Diffusion Studio and block until its window closes; returns the exit code."""
    problem = platform_problem() or qt_binding_problem()
    if problem:  # refuse now rather than abort the interpreter minutes into a session
        sys.stderr.write(f"error: {problem}\n")
        return 2
    from diffusion_studio.ui import gui_gc
    from diffusion_studio.ui.main_window import MainWindow

    app = QApplication.instance()
    if not isinstance(app, QApplication):
        app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APPLICATION)
    app.setDesktopFileName("diffusion-studio")
    icon = Path(__file__).resolve().parents[2] / "packaging" / "diffusion-studio.svg"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))
    install_excepthook(setup_logging())
    gui_gc.install(app)  # cycles (and the Qt objects in them) are freed on this thread only
    window = MainWindow(model_path=model_path)
    window.show()
    log.info("main window shown: %s", window.windowTitle())
    quit_after = os.environ.get(QUIT_AFTER_ENV, "").strip()
    if quit_after.isdigit():  # a smoke test of an installed or frozen app: open, then close
        QTimer.singleShot(int(quit_after), window.close)
    return int(app.exec())

"""Start-up: a whole `diffusion-studio generate` process from spawn to the PNG on disk, and the
desktop app from spawn to the main window's first paint (offscreen Qt when there is no display).

Each is a fresh Python process, so imports, bundle checks and session creation are all counted.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.peers import PROMPT

# The child of the app timing: the app's own start (QApplication, MainWindow with the default
# model, show), then exit at the first paint event of the main window.
_FIRST_PAINT = r"""
import sys
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication
app = QApplication(sys.argv[:1])
from diffusion_studio.ui.main_window import MainWindow
window = MainWindow()

class FirstPaint(QObject):
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Paint:
            sys.stdout.write("painted\n"); sys.stdout.flush()
            QTimer.singleShot(0, app.quit)
            obj.removeEventFilter(self)
        return False

spy = FirstPaint()
window.installEventFilter(spy)
window.show()
QTimer.singleShot(60000, app.quit)
app.exec()
"""


def cli_seconds(repeat: int, steps: int | None = None, warm: bool = True) -> dict[str, Any]:
    """Median seconds of `python -m diffusion_studio generate PROMPT --seed 0 -o X.png`, spawn to exit."""
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat + 1 - (not warm)):  # a first run warms the OS file cache; not counted
            out = Path(tmp) / f"image-{i}.png"
            cmd = [sys.executable, "-m", "diffusion_studio", "generate", PROMPT, "--seed", "0", "--device", "cpu",
                   "-o", str(out)]
            if steps is not None:
                cmd += ["--steps", str(steps)]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            elapsed = time.perf_counter() - start
            if proc.returncode != 0 or not out.is_file():
                return {"seconds": None, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
            if i or not warm:
                samples.append(elapsed)
    return {"seconds": statistics.median(samples), "steps": steps or "bundle default"}


def app_seconds(repeat: int, warm: bool = True) -> dict[str, Any]:
    """Median seconds from spawning the app process to the main window's first paint."""
    env = dict(os.environ)
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        env["QT_QPA_PLATFORM"] = "offscreen"
    samples = []
    for i in range(repeat + 1 - (not warm)):
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _FIRST_PAINT], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        elapsed = time.perf_counter() - start
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if line.strip() != "painted":
            return {"seconds": None, "error": (err.strip().splitlines() or ["no paint event"])[-1]}
        if i or not warm:
            samples.append(elapsed)
    return {"seconds": statistics.median(samples), "platform": env.get("QT_QPA_PLATFORM", "native")}

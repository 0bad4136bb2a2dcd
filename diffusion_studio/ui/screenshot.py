"""Take the README screenshot: the real window, mid-generation (run it under xvfb-run).

    xvfb-run -a -s "-screen 0 1600x1000x24" python -m diffusion_studio.ui.screenshot \
        docs/screenshot-generate.png --prompt "a large red circle on a white background"

Settings and history go to a temporary folder, so the user's own are never touched. A
few short runs fill the history first; the picture is taken when the main run reaches
`--at` of its steps, then that run is cancelled and the window closed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Qt is imported only after the environment is set up (isolated_window)
    from PySide6.QtGui import QPalette
    from PySide6.QtWidgets import QApplication, QWidget

    from diffusion_studio.ui.main_window import MainWindow

DEFAULT_PROMPTS = (
    "a small blue triangle on a black background",
    "a large green square in the top left",
    "a purple circle on a gray background",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m diffusion_studio.ui.screenshot", description=__doc__)
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--model", help="model bundle (default: the default model)")
    parser.add_argument("--prompt", default="a large red circle on a white background")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--at", type=float, default=0.5, help="fraction of the steps done when the picture is taken")
    parser.add_argument("--size", default="1280x800", help="window size WxH")
    parser.add_argument("--dark", action="store_true", help="use a dark palette (to check dark mode)")
    return parser.parse_args(argv)


def _dark_palette() -> QPalette:
    from PySide6.QtGui import QColor, QPalette

    palette = QPalette()
    roles = {
        QPalette.ColorRole.Window: (45, 45, 48),
        QPalette.ColorRole.WindowText: (230, 230, 230),
        QPalette.ColorRole.Base: (30, 30, 32),
        QPalette.ColorRole.AlternateBase: (45, 45, 48),
        QPalette.ColorRole.Text: (230, 230, 230),
        QPalette.ColorRole.Button: (55, 55, 60),
        QPalette.ColorRole.ButtonText: (230, 230, 230),
        QPalette.ColorRole.Highlight: (42, 130, 218),
        QPalette.ColorRole.HighlightedText: (255, 255, 255),
        QPalette.ColorRole.PlaceholderText: (150, 150, 150),
        QPalette.ColorRole.ToolTipBase: (45, 45, 48),
        QPalette.ColorRole.ToolTipText: (230, 230, 230),
    }
    for role, rgb in roles.items():
        palette.setColor(role, QColor(*rgb))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(120, 120, 120))
    return palette


def isolated_window(model: str | None, size: str, dark: bool) -> tuple[QApplication, MainWindow, Path]:
    """(app, shown MainWindow, scratch folder): settings and history live in a temp folder,
    so the user's own are never touched."""
    scratch = Path(tempfile.mkdtemp(prefix="diffusion-studio-screenshot-"))
    os.environ["DIFFUSION_STUDIO_DATA_DIR"] = str(scratch / "data")

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(scratch / "settings"))
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        app = QApplication(sys.argv[:1])
    app.setStyle("Fusion")
    if dark:
        app.setPalette(_dark_palette())

    from diffusion_studio.ui.main_window import MainWindow

    window = MainWindow(model_path=model)
    width, height = (int(v) for v in size.lower().split("x"))
    window.resize(width, height)
    window.show()
    return app, window, scratch


def save_grab(widget: QWidget, out: Path) -> bool:
    """Write a picture of `widget` as PNG atomically (core.files); False if Qt cannot encode it."""
    from PySide6.QtCore import QBuffer, QIODevice

    from diffusion_studio.core.files import atomic_write_bytes

    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not widget.grab().save(buffer, "PNG"):
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, bytes(buffer.data().data()))
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    app, window, scratch = isolated_window(args.model, args.size, args.dark)
    ws = window.generateWorkspace
    panel = ws.settingsPanel
    if ws.model() is None:
        sys.stderr.write("error: no model could be loaded; pass --model BUNDLE.\n")
        window.close()
        return 2

    def run(prompt: str, steps: int, batch: int, seed: int, until: float | None = None) -> bool:
        panel.promptEdit.setPlainText(prompt)
        panel.stepsSpin.setValue(steps)
        panel.batchSpin.setValue(batch)
        panel.seedSpin.setValue(seed)
        panel.seedLockButton.setChecked(True)
        if args.guidance is not None:
            panel.guidanceSpin.setValue(args.guidance)
        ws.generate()
        while ws.is_running():
            app.processEvents()
            done = ws.previewArea.progressBar.value()
            if until is not None and done >= until * steps and ws.previewArea.current_frame() is not None:
                return True
            time.sleep(0.005)
        app.processEvents()
        return False

    for i, prompt in enumerate(DEFAULT_PROMPTS):
        run(prompt, 12, 1, args.seed + 11 * i)
    ws.historyPanel.historyList.clearSelection()
    if not run(args.prompt, args.steps, args.batch, args.seed, until=args.at):
        sys.stderr.write("error: the run ended before it could be captured; use more --steps.\n")
        window.close()
        return 2
    for _ in range(5):  # let the latest preview and progress text paint
        app.processEvents()
        time.sleep(0.01)
    ok = save_grab(window, args.out)
    ws.cancel()
    window.close()
    print(f"wrote {args.out}" if ok else f"error: could not write {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The desktop app (PySide6). The only package that imports Qt.

`from diffusion_studio.ui import MainWindow`; `MainWindow(model_path=None)` opens the
default model. `diffusion_studio.ui.app.run_app()` starts the whole application.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusion_studio.ui.main_window import MainWindow

__all__ = ["MainWindow"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing a headless submodule (ui.generate.state, ui.forward.state) does not build Qt widgets.
    if name == "MainWindow":
        from diffusion_studio.ui.main_window import MainWindow

        return MainWindow
    raise AttributeError(f"module 'diffusion_studio.ui' has no attribute {name!r}")

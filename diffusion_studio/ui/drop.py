"""PNG drag-and-drop: which files an event carries, and a filter for text fields.

Dropping a PNG with generation metadata anywhere on the window fills the form. Text
fields would otherwise swallow the drop and paste the file's path, so `PngDropFilter`
passes PNG drops on them to the window's handler.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEvent, QObject
from PySide6.QtGui import QDragEnterEvent, QDropEvent


def png_paths(event: QDragEnterEvent | QDropEvent) -> list[Path]:
    """Local .png files carried by a drag-and-drop event."""
    mime = event.mimeData()
    if not mime.hasUrls():
        return []
    paths = [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]
    return [p for p in paths if p.suffix.lower() == ".png"]


class PngDropFilter(QObject):
    """Event filter: accepts PNG drags and hands PNG drops to `on_drop` (other drops pass)."""

    def __init__(self, on_drop: Callable[[QDropEvent], None], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._on_drop = on_drop

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind in (QEvent.Type.DragEnter, QEvent.Type.DragMove) and png_paths(event):  # type: ignore[arg-type]
            event.acceptProposedAction()  # type: ignore[attr-defined]
            return True
        if kind == QEvent.Type.Drop and png_paths(event):  # type: ignore[arg-type]
            self._on_drop(event)  # type: ignore[arg-type]
            return True
        return False

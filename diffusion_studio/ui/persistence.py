"""Where the app keeps its state: QSettings (form, window, recent bundles) and the data folder.

Tests isolate both: `QSettings.setPath(IniFormat, UserScope, tmp)` redirects the
settings file and `DIFFUSION_STUDIO_DATA_DIR` (or `QStandardPaths.setTestModeEnabled`)
redirects the history folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QCoreApplication, QSettings, QStandardPaths

from diffusion_studio.ui.generate.previews import PreviewMode
from diffusion_studio.ui.generate.settings import GenerationSettings

ORGANIZATION = "DiffusionStudio"
APPLICATION = "Diffusion Studio"
DATA_DIR_ENV = "DIFFUSION_STUDIO_DATA_DIR"
MAX_RECENT = 8


def ensure_identity() -> None:
    """Give the QCoreApplication our names (QStandardPaths and QSettings derive paths from them)."""
    app = QCoreApplication.instance()
    if app is not None and app.organizationName() != ORGANIZATION:
        app.setOrganizationName(ORGANIZATION)
        app.setApplicationName(APPLICATION)


def data_dir() -> Path:
    """The user's data folder for this app (QStandardPaths.AppDataLocation), created if needed."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        folder = Path(override)
    else:
        ensure_identity()
        location = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
        folder = Path(location) if location else Path.home() / ".local" / "share" / APPLICATION
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def history_dir() -> Path:
    folder = data_dir() / "history"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class AppSettings:
    """Typed access to the app's QSettings (INI format, user scope)."""

    def __init__(self, settings: QSettings | None = None) -> None:
        self.qsettings = settings or QSettings(
            QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION
        )

    def sync(self) -> None:
        self.qsettings.sync()

    # --- the form --------------------------------------------------------------------------
    def has_form(self) -> bool:
        """Whether a Generate form was saved (False on the first launch)."""
        return self.qsettings.contains("generate/form")

    def form(self) -> GenerationSettings:
        raw = self.qsettings.value("generate/form", "")
        try:
            data = json.loads(str(raw)) if raw else {}
        except json.JSONDecodeError:
            data = {}
        return GenerationSettings.from_dict(data if isinstance(data, dict) else {})

    def set_form(self, settings: GenerationSettings) -> None:
        self.qsettings.setValue("generate/form", json.dumps(settings.to_dict()))

    # --- view options ----------------------------------------------------------------------
    def preview_mode(self) -> PreviewMode:
        try:
            return PreviewMode(str(self.qsettings.value("view/preview_mode", PreviewMode.X0.value)))
        except ValueError:
            return PreviewMode.X0

    def set_preview_mode(self, mode: PreviewMode) -> None:
        self.qsettings.setValue("view/preview_mode", mode.value)

    def smooth_zoom(self) -> bool:
        return str(self.qsettings.value("view/smooth_zoom", "false")).lower() == "true"

    def set_smooth_zoom(self, smooth: bool) -> None:
        self.qsettings.setValue("view/smooth_zoom", "true" if smooth else "false")

    # --- models ----------------------------------------------------------------------------
    def recent_bundles(self) -> list[str]:
        raw = self.qsettings.value("models/recent", "[]")
        try:
            items = json.loads(str(raw))
        except json.JSONDecodeError:
            return []
        return [str(p) for p in items if isinstance(p, str)][:MAX_RECENT] if isinstance(items, list) else []

    def add_recent_bundle(self, folder: Path | str) -> list[str]:
        path = str(Path(folder).resolve())
        items = [path] + [p for p in self.recent_bundles() if p != path]
        self.qsettings.setValue("models/recent", json.dumps(items[:MAX_RECENT]))
        return items[:MAX_RECENT]

    def remove_recent_bundle(self, folder: Path | str) -> None:
        path = str(Path(folder).resolve())
        self.qsettings.setValue("models/recent", json.dumps([p for p in self.recent_bundles() if p != path]))

    # --- window ----------------------------------------------------------------------------
    def window_state(self, key: str) -> QByteArray | None:
        value = self.qsettings.value(f"window/{key}")
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_window_state(self, key: str, value: QByteArray) -> None:
        self.qsettings.setValue(f"window/{key}", value)

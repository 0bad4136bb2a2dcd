"""Where the app keeps its state: QSettings (form, window, recent bundles) and the data folder.

The data folder (history, training runs, the log) is one folder named after the app in the
platform's data location: `~/.local/share/diffusion-studio` on Linux. Earlier versions used Qt's
AppDataLocation, which nests the organisation and application names
(`DiffusionStudio/Diffusion Studio`); `data_dir` moves such a folder's contents over once,
merging with what is already there and never overwriting or deleting a file.

Tests isolate both: `QSettings.setPath(IniFormat, UserScope, tmp)` redirects the
settings file and `DIFFUSION_STUDIO_DATA_DIR` (or `QStandardPaths.setTestModeEnabled`)
redirects the history folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from PySide6.QtCore import QByteArray, QCoreApplication, QSettings, QStandardPaths

from diffusion_studio.ui.generate.previews import PreviewMode
from diffusion_studio.ui.generate.settings import GenerationSettings

ORGANIZATION = "DiffusionStudio"
APPLICATION = "Diffusion Studio"
DATA_DIR_ENV = "DIFFUSION_STUDIO_DATA_DIR"
DATA_FOLDER = "diffusion-studio"  # the one data folder, named like the command
LEGACY_DATA_FOLDER = (ORGANIZATION, APPLICATION)  # Qt's AppDataLocation: organisation / application

log = logging.getLogger(__name__)
MAX_RECENT = 8


def ensure_identity() -> None:
    """Give the QCoreApplication our names (QStandardPaths and QSettings derive paths from them)."""
    app = QCoreApplication.instance()
    if app is not None and app.organizationName() != ORGANIZATION:
        app.setOrganizationName(ORGANIZATION)
        app.setApplicationName(APPLICATION)


def generic_data_location() -> Path:
    """The platform's folder for application data (~/.local/share on Linux)."""
    location = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericDataLocation)
    return Path(location) if location else Path.home() / ".local" / "share"


def legacy_data_location() -> Path | None:
    """Where earlier versions kept their data: Qt's AppDataLocation (organisation / application)."""
    ensure_identity()
    location = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(location) if location else None


def data_dir(base: Path | None = None) -> Path:
    """The user's data folder for this app, `<data location>/diffusion-studio`, created if needed;
    a legacy `DiffusionStudio/Diffusion Studio` folder there is moved in first."""
    override = os.environ.get(DATA_DIR_ENV)
    if override and base is None:
        folder = Path(override)
    else:
        root = base if base is not None else generic_data_location()
        folder = root / DATA_FOLDER
        legacy = root.joinpath(*LEGACY_DATA_FOLDER) if base is not None else legacy_data_location()
        if legacy is not None and legacy.is_dir() and legacy.resolve() != folder.resolve():
            migrate_folder(legacy, folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _free_name(target: Path) -> Path:
    """`target`, or `name (migrated N).ext` beside it when that name is taken."""
    n = 1
    candidate = target
    while candidate.exists():
        candidate = target.with_name(f"{target.stem} (migrated {n}){target.suffix}")
        n += 1
    return candidate


def migrate_folder(old: Path, new: Path) -> list[Path]:
    """Move everything from `old` into `new`, merging folders; a file whose name is taken in `new`
    keeps both (the moved one renamed). Empty folders left behind are removed, then `old` and its
    parent if empty. Returns the paths written in `new`. A failure is logged and leaves files in
    place: nothing is ever overwritten or deleted."""
    moved: list[Path] = []
    try:
        new.mkdir(parents=True, exist_ok=True)
        for child in sorted(old.iterdir()):
            target = new / child.name
            if child.is_dir() and not child.is_symlink() and target.is_dir():
                moved += migrate_folder(child, target)
                continue
            target = _free_name(target)
            shutil.move(str(child), str(target))
            moved.append(target)
        old.rmdir()
        if old.parent.name == LEGACY_DATA_FOLDER[0] and not any(old.parent.iterdir()):
            old.parent.rmdir()
    except OSError as exc:
        log.warning("Could not move the old data folder %s to %s completely: %s", old, new, exc)
    if moved:
        log.info("Moved %d item(s) from the old data folder %s to %s.", len(moved), old, new)
    return moved


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

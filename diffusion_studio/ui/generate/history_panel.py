"""History view: thumbnails of finished images (`historyList`), their parameters and actions.

A view over `HistoryStore`. Selecting an entry emits `entrySelected` (the window shows
the image); the actions (Reuse settings, Save As…, Copy image, Reveal in folder,
Delete) work on the selected entry. Dialogs are the only blocking calls.

The images of one batch are one group: the first image heads it ("▸ batch of 4"), the others
follow it indented and show when the group is expanded (double-click the head, or the context
menu's "Expand / collapse batch"). A new batch arrives expanded, older ones collapsed. The order
(newest run first, a batch in its own order) is `history.in_history_order`, the same after a restart.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication, QIcon, QImage, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QGridLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.core.files import atomic_write_bytes
from diffusion_studio.core.params import sampler_label
from diffusion_studio.errors import UsageError
from diffusion_studio.ui.generate.history import HistoryEntry, HistoryStore, batch_key

THUMBNAIL = 64
MAX_LISTED = 500
PATH_ROLE = Qt.ItemDataRole.UserRole
BATCH_ROLE = Qt.ItemDataRole.UserRole + 1  # batch_key of the entry, "" for a single image

# Metadata keys shown first, with their labels; any other key follows as is.
_DETAIL_LABELS = (
    ("prompt", "Prompt"),
    ("negative_prompt", "Negative prompt"),
    ("class_label", "Class"),
    ("conditioning", "Conditioning"),
    ("sampler", "Sampler"),
    ("steps", "Steps"),
    ("guidance", "Guidance"),
    ("seed", "Seed"),
    ("strength", "Strength (img2img)"),
    ("init_image", "Init image"),
    ("init_image_source", "Init image"),
    ("init_image_sha256", "Init image SHA-256"),
    ("model", "Model"),
    ("model_hash", "Model hash"),
    ("provider", "Provider"),
    ("onnxruntime", "ONNX Runtime"),
    ("seconds", "Run time (s)"),
    ("created", "Created"),
)
_HIDDEN = {"parameters", "sampler_label", "width", "height", "batch_size", "batch_index"}


def format_details(entry: HistoryEntry) -> str:
    """The parameters of an entry as `Label: value` lines (known keys first)."""
    meta: dict[str, Any] = dict(entry.metadata)
    if "sampler" in meta:
        meta["sampler"] = sampler_label(meta["sampler"])
    if meta.get("conditioning") in ("class", "none"):  # no text: the prompt and guidance were not used
        for key in ("prompt", "negative_prompt", "guidance"):
            meta.pop(key, None)
    if meta.get("class_name") and meta.get("class_label") is not None:
        meta["class_label"] = f"{meta['class_label']} · {meta.pop('class_name')}"
    lines = []
    for key, label in _DETAIL_LABELS:
        if key in meta:
            lines.append(f"{label}: {_value_text(meta.pop(key))}")
    if "width" in meta and "height" in meta:
        lines.append(f"Size: {meta['width']}×{meta['height']}")
    if meta.get("batch_size", 1) not in (1, "1"):
        lines.append(f"Batch: image {int(meta.get('batch_index', 0)) + 1} of {meta['batch_size']}")
    for key in sorted(k for k in meta if k not in _HIDDEN):
        lines.append(f"{key}: {_value_text(meta[key])}")
    lines.append(f"File: {entry.path}")
    return "\n".join(lines)


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_value_text(v)}" for k, v in value.items())
    return str(value)


def thumbnail(path: Path) -> QIcon:
    """A crisp (nearest-neighbour) square thumbnail of a small PNG."""
    image = QImage(str(path))
    if image.isNull():
        return QIcon()
    scaled = image.scaled(
        THUMBNAIL, THUMBNAIL, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation
    )
    return QIcon(QPixmap.fromImage(scaled))


def reveal_in_folder(path: Path) -> None:
    """Show the file in the platform's file manager (selected where the platform allows)."""
    if sys.platform == "win32":
        subprocess.Popen(["explorer", "/select,", str(path)])  # noqa: S603,S607
    elif sys.platform == "darwin":
        subprocess.Popen(["open", "-R", str(path)])  # noqa: S603,S607
    else:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path.parent)))


def copy_file_atomic(source: Path, target: Path) -> None:
    """Copy a history PNG (a few kB) to `target` atomically; UsageError with one sentence."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise UsageError(f"Cannot read {source} ({exc.strerror or exc}).") from None
    atomic_write_bytes(target, data)


class HistoryPanel(QWidget):
    """`historyList` with details and actions for the selected entry."""

    entrySelected = Signal(object)  # HistoryEntry | None
    reuseRequested = Signal(object)  # HistoryEntry
    errorOccurred = Signal(str)

    def __init__(self, store: HistoryStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("historyPanel")
        self.store = store
        self._entries: dict[str, HistoryEntry] = {}
        self._expanded: set[str] = set()  # batch keys shown open

        self.historyList = QListWidget(objectName="historyList")
        self.historyList.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.historyList.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.historyList.itemDoubleClicked.connect(self.toggle_batch)
        self.historyList.setWordWrap(True)
        self.historyList.setAccessibleName("History")
        self.historyList.currentItemChanged.connect(self._on_current_changed)
        self.historyList.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)

        self.detailsView = QPlainTextEdit(objectName="historyDetails", readOnly=True)
        self.detailsView.setPlaceholderText("Select an image to see its parameters.")
        self.detailsView.setMaximumHeight(170)

        self.reuseButton = QPushButton("Reuse settings", objectName="reuseButton")
        self.reuseButton.setToolTip("Fill the form with this image's settings (seed locked)")
        self.saveAsButton = QPushButton("Save As…", objectName="saveAsButton")
        self.copyButton = QPushButton("Copy image", objectName="copyButton")
        self.revealButton = QPushButton("Reveal in folder", objectName="revealButton")
        self.deleteButton = QPushButton("Delete…", objectName="deleteButton")
        self.reuseButton.clicked.connect(self.reuse_selected)
        self.saveAsButton.clicked.connect(self.save_selected_as)
        self.copyButton.clicked.connect(self.copy_selected)
        self.revealButton.clicked.connect(self.reveal_selected)
        self.deleteButton.clicked.connect(self.delete_selected)

        self.deleteAction = QAction("Delete…", self, shortcut=QKeySequence.StandardKey.Delete)
        self.deleteAction.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.deleteAction.triggered.connect(self.delete_selected)
        for text, slot in (
            ("Reuse settings", self.reuse_selected),
            ("Save As…", self.save_selected_as),
            ("Copy image", self.copy_selected),
            ("Reveal in folder", self.reveal_selected),
        ):
            action = QAction(text, self.historyList)
            action.triggered.connect(slot)
            self.historyList.addAction(action)
        self.toggleBatchAction = QAction("Expand / collapse batch", self.historyList)
        self.toggleBatchAction.setObjectName("toggleBatchAction")
        self.toggleBatchAction.triggered.connect(lambda: self.toggle_batch(self.historyList.currentItem()))
        self.historyList.addAction(self.toggleBatchAction)
        self.historyList.addAction(self.deleteAction)

        buttons = QGridLayout()
        buttons.addWidget(self.reuseButton, 0, 0, 1, 2)
        buttons.addWidget(self.saveAsButton, 1, 0)
        buttons.addWidget(self.copyButton, 1, 1)
        buttons.addWidget(self.revealButton, 2, 0)
        buttons.addWidget(self.deleteButton, 2, 1)

        self.countLabel = QLabel(objectName="historyCountLabel")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.countLabel)
        layout.addWidget(self.historyList, 1)
        layout.addWidget(self.detailsView)
        layout.addLayout(buttons)
        self.setMinimumWidth(220)
        self.reload()

    # --- contents --------------------------------------------------------------------------
    def reload(self) -> None:
        """List the store's entries again (newest first)."""
        self.historyList.blockSignals(True)
        self.historyList.clear()
        self._entries.clear()
        for entry in self.store.entries()[:MAX_LISTED]:
            self._append(entry)
        self._refresh_groups()
        self.historyList.blockSignals(False)
        self._update_actions()

    def _make_item(self, entry: HistoryEntry) -> QListWidgetItem:
        item = QListWidgetItem(thumbnail(entry.path), f"{entry.title}\n{entry.subtitle}")
        item.setData(PATH_ROLE, str(entry.path))
        item.setData(BATCH_ROLE, batch_key(entry) or "")
        item.setToolTip(format_details(entry))
        self._entries[str(entry.path)] = entry
        return item

    def _append(self, entry: HistoryEntry) -> None:
        self.historyList.addItem(self._make_item(entry))

    def add_entries(self, entries: list[HistoryEntry], select_first: bool = True) -> None:
        """Put newly written entries on top; select the first without showing it."""
        for entry in reversed(entries):
            self.historyList.insertItem(0, self._make_item(entry))
        self._expanded.update(key for key in (batch_key(e) for e in entries) if key)  # a new batch arrives open
        self._refresh_groups()
        if select_first and entries:
            self.historyList.blockSignals(True)
            self.historyList.setCurrentRow(0)
            self.historyList.blockSignals(False)
            self.detailsView.setPlainText(format_details(entries[0]))
        self._update_actions()

    # --- batches -----------------------------------------------------------------------------
    def _refresh_groups(self) -> None:
        """Head, member and hidden state of every row from the list's order and the open batches."""
        sizes: dict[str, int] = {}
        for i in range(self.historyList.count()):
            key = self.historyList.item(i).data(BATCH_ROLE)
            if key:
                sizes[key] = sizes.get(key, 0) + 1
        seen: set[str] = set()
        for i in range(self.historyList.count()):
            item = self.historyList.item(i)
            entry = self._entries[item.data(PATH_ROLE)]
            key = item.data(BATCH_ROLE)
            text = f"{entry.title}\n{entry.subtitle}"
            hidden = False
            if key and sizes[key] > 1:
                if key in seen:  # a member: indented under its head, shown when the batch is open
                    text = f"    ↳ {entry.subtitle}"
                    hidden = key not in self._expanded
                else:
                    arrow = "▾" if key in self._expanded else "▸"
                    text = f"{entry.title}\n{arrow} batch of {sizes[key]} · {entry.subtitle}"
                seen.add(key)
            item.setText(text)
            item.setHidden(hidden)

    def is_batch_head(self, item: QListWidgetItem | None) -> bool:
        if item is None or not item.data(BATCH_ROLE):
            return False
        key = item.data(BATCH_ROLE)
        same = [self.historyList.item(i) for i in range(self.historyList.count())
                if self.historyList.item(i).data(BATCH_ROLE) == key]
        return len(same) > 1 and same[0] is item

    def batch_items(self, key: str) -> list[QListWidgetItem]:
        return [self.historyList.item(i) for i in range(self.historyList.count())
                if self.historyList.item(i).data(BATCH_ROLE) == key]

    def is_expanded(self, key: str) -> bool:
        return key in self._expanded

    def set_batch_expanded(self, key: str, expanded: bool) -> None:
        if expanded:
            self._expanded.add(key)
        else:
            self._expanded.discard(key)
            current = self.historyList.currentItem()
            if current is not None and current.data(BATCH_ROLE) == key and not self.is_batch_head(current):
                self.historyList.setCurrentItem(self.batch_items(key)[0])  # the selection stays visible
        self._refresh_groups()

    def toggle_batch(self, item: QListWidgetItem | None) -> None:
        """Open or close the batch `item` belongs to."""
        if item is None or not item.data(BATCH_ROLE) or len(self.batch_items(item.data(BATCH_ROLE))) < 2:
            return
        key = item.data(BATCH_ROLE)
        self.set_batch_expanded(key, key not in self._expanded)

    def entries(self) -> list[HistoryEntry]:
        return [self._entries[self.historyList.item(i).data(PATH_ROLE)] for i in range(self.historyList.count())]

    def selected_entry(self) -> HistoryEntry | None:
        item = self.historyList.currentItem()
        return None if item is None else self._entries.get(item.data(PATH_ROLE))

    def clear_selection(self) -> None:
        """No current entry (a run started): empty details, actions disabled."""
        self.historyList.blockSignals(True)
        self.historyList.setCurrentRow(-1)
        self.historyList.clearSelection()
        self.historyList.blockSignals(False)
        self.detailsView.clear()
        self._update_actions()

    def select_entry(self, path: Path | str) -> None:
        for i in range(self.historyList.count()):
            if self.historyList.item(i).data(PATH_ROLE) == str(path):
                self.historyList.setCurrentRow(i)
                return

    def _on_current_changed(self, current: QListWidgetItem | None, _previous: object) -> None:
        entry = None if current is None else self._entries.get(current.data(PATH_ROLE))
        self.detailsView.setPlainText(format_details(entry) if entry else "")
        self._update_actions()
        self.entrySelected.emit(entry)

    def _update_actions(self) -> None:
        has = self.selected_entry() is not None
        for widget in (self.reuseButton, self.saveAsButton, self.copyButton, self.revealButton, self.deleteButton):
            widget.setEnabled(has)
        for action in self.historyList.actions():
            action.setEnabled(has)
        n = self.historyList.count()
        self.countLabel.setText(f"History · {n} image{'s' if n != 1 else ''}")

    # --- actions ---------------------------------------------------------------------------
    def reuse_selected(self) -> None:
        entry = self.selected_entry()
        if entry is not None:
            self.reuseRequested.emit(entry)

    def save_selected_as(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        target, _ = QFileDialog.getSaveFileName(
            self, "Save image as", str(Path.home() / entry.path.name), "PNG image (*.png)"
        )
        if not target:
            return
        target_path = Path(target) if target.lower().endswith(".png") else Path(target + ".png")
        try:
            copy_file_atomic(entry.path, target_path)
        except UsageError as exc:
            self.errorOccurred.emit(str(exc))

    def copy_selected(self) -> None:
        entry = self.selected_entry()
        if entry is not None:
            QGuiApplication.clipboard().setImage(QImage(str(entry.path)))

    def reveal_selected(self) -> None:
        entry = self.selected_entry()
        if entry is not None:
            reveal_in_folder(entry.path)

    def delete_selected(self) -> None:
        entry = self.selected_entry()
        if entry is None:
            return
        answer = QMessageBox.question(
            self,
            "Delete image",
            f"Delete “{entry.title}” ({entry.path.name}) from the history? This cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Cancel,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            self.store.delete(entry)
        except UsageError as exc:
            self.errorOccurred.emit(str(exc))
            return
        row = self.historyList.currentRow()
        self._entries.pop(str(entry.path), None)
        self.historyList.takeItem(row)
        self._refresh_groups()
        self._update_actions()
        if self.historyList.count() == 0:
            self.entrySelected.emit(None)

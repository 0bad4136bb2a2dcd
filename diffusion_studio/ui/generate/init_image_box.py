"""The "Init image" box of the Generate settings: img2img's start image and strength.

A view over `GenerateState` like the rest of the form: it shows `state.init_image` (a
thumbnail, `initImageView`) and `settings.strength` (`strengthSlider` + `strengthSpin`) and
writes edits back. An image comes from Open… (a file dialog), a file or image dropped on the
box, or Paste (Ctrl+V while the box has focus, or the button). A PNG dropped here is the init
image; anywhere else on the window it still means "restore its settings". A file is decoded,
hashed and fitted to the model in a loader thread (a large photo takes seconds; the latest
request wins), so the GUI thread never waits on it. A file that cannot be read is one
sentence in `errorOccurred` (a dialog) and under the box.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from PySide6.QtCore import QMimeData, QObject, Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QImage, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from diffusion_studio.errors import UsageError
from diffusion_studio.ui.generate.init_image import InitImage
from diffusion_studio.ui.generate.state import GenerateState
from diffusion_studio.ui.widgets.image_view import ImageView

log = logging.getLogger(__name__)

SLIDER_STEPS = 100  # the slider moves in 0.01 steps of strength; the spin box takes the same
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.gif *.tif *.tiff);;All files (*)"
THUMB = 72  # the thumbnail's side in logical pixels


def image_from_qimage(image: QImage) -> np.ndarray:
    """A QImage (the clipboard's, a drop's) as uint8 [H, W, 4] RGBA."""
    rgba = image.convertToFormat(QImage.Format.Format_RGBA8888)
    w, h, stride = rgba.width(), rgba.height(), rgba.bytesPerLine()
    data = np.frombuffer(rgba.constBits(), dtype=np.uint8, count=stride * h).reshape(h, stride)
    return np.array(data[:, : w * 4].reshape(h, w, 4), copy=True)


def local_files(mime: QMimeData) -> list[Path]:
    return [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()] if mime.hasUrls() else []


class FileLoader(QObject):
    """Reads init image files in a daemon thread; `done` arrives on the GUI thread, the latest wins."""

    done = Signal(int, object, str)  # request number, InitImage | None, the sentence if it failed

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.latest = 0

    def load(self, path: Path, fit: tuple[int, int] | None, sha256: str = "") -> int:
        """Read `path` (refused if `sha256` is given and the file's differs)."""
        self.latest += 1
        threading.Thread(target=self._read, args=(self.latest, path, fit, sha256), name="init-image-loader",
                         daemon=True).start()
        return self.latest

    def _read(self, number: int, path: Path, fit: tuple[int, int] | None, sha256: str) -> None:
        init, error = None, ""
        try:
            init = InitImage.from_file(path, sha256)
            init.thumbnail()
            if fit is not None:
                init.model_array(*fit)  # warmed here, so Generate does not wait for a large photo
        except UsageError as exc:
            if init is None:
                error = str(exc)  # (a model that takes no init image says so when Generate starts)
        except Exception as exc:  # noqa: BLE001 - a decoder bug is a sentence, logged, not a crash
            log.exception("Reading the init image %s failed", path)
            init, error = None, f"The init image {path} cannot be read ({exc})."
        try:
            self.done.emit(number, init, error)
        except RuntimeError:  # the window closed while the file was read
            pass


class InitImageBox(QGroupBox):
    """Init image (thumbnail, Open…/Paste/Clear) and strength, over `GenerateState`."""

    errorOccurred = Signal(str, str)  # title, one sentence
    loadFinished = Signal(bool)  # a file request ended: used (True) or refused (False)

    def __init__(self, state: GenerateState, parent: QWidget | None = None) -> None:
        super().__init__("Init image (img2img)", parent)
        self.setObjectName("initImageBox")
        self.state = state
        self._showing = False
        self.loader = FileLoader(self)
        self.loader.done.connect(self._on_loaded)
        self.setAcceptDrops(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # Ctrl+V pastes while the box has focus
        self.setToolTip("Start from an image instead of noise: open, drop or paste (Ctrl+V) one here")

        self.initImageView = ImageView(placeholder="Drop or\npaste")
        self.initImageView.setObjectName("initImageView")
        self.initImageView.setAccessibleName("Init image")
        self.initImageView.setMinimumSize(THUMB, THUMB)
        self.initImageView.setFixedSize(THUMB, THUMB)
        self.initImageView.set_smooth(True)
        self.openInitButton = QToolButton(objectName="openInitButton", text="Open…")
        self.openInitButton.setToolTip("Open an image file to start from")
        self.openInitButton.clicked.connect(self.open_dialog)
        self.pasteInitButton = QToolButton(objectName="pasteInitButton", text="Paste")
        self.pasteInitButton.setToolTip("Paste an image from the clipboard (Ctrl+V)")
        self.pasteInitButton.clicked.connect(self.paste)
        self.clearInitButton = QToolButton(objectName="clearInitButton", text="Clear")
        self.clearInitButton.setToolTip("Start from noise again (text-to-image)")
        self.clearInitButton.clicked.connect(self.clear)
        self.initImageLabel = QLabel(objectName="initImageLabel")
        self.initImageLabel.setWordWrap(True)
        self.initImageLabel.setTextFormat(Qt.TextFormat.PlainText)
        buttons = QHBoxLayout()
        buttons.setSpacing(4)
        for button in (self.openInitButton, self.pasteInitButton, self.clearInitButton):
            buttons.addWidget(button)
        buttons.addStretch(1)
        side = QVBoxLayout()
        side.setSpacing(4)
        side.addLayout(buttons)
        side.addWidget(self.initImageLabel, 1)

        self.strengthSlider = QSlider(Qt.Orientation.Horizontal, objectName="strengthSlider")
        self.strengthSlider.setRange(1, SLIDER_STEPS)  # (0, 1]: check_strength's range
        self.strengthSlider.setAccessibleName("Strength")
        self.strengthSpin = QDoubleSpinBox(objectName="strengthSpin")
        self.strengthSpin.setRange(1 / SLIDER_STEPS, 1.0)
        self.strengthSpin.setDecimals(2)
        self.strengthSpin.setSingleStep(0.05)
        tip = ("How much of the schedule is redrawn: the image is noised to t = strength·T and "
               "round(strength·steps) steps run (1 ignores the init image)")
        for widget in (self.strengthSlider, self.strengthSpin):
            widget.setToolTip(tip)
        self.strengthNote = QLabel(objectName="strengthNote")
        self.strengthNote.setWordWrap(True)
        font = self.strengthNote.font()
        font.setPointSizeF(max(7.0, font.pointSizeF() - 1))
        self.strengthNote.setFont(font)
        self.initImageLabel.setFont(font)

        grid = QGridLayout(self)
        grid.setHorizontalSpacing(8)
        grid.setVerticalSpacing(4)
        grid.addWidget(self.initImageView, 0, 0, 2, 1, Qt.AlignmentFlag.AlignTop)
        grid.addLayout(side, 0, 1, 2, 2)
        strength_label = QLabel("Strength")
        strength_label.setBuddy(self.strengthSpin)
        grid.addWidget(strength_label, 2, 0)
        grid.addWidget(self.strengthSlider, 2, 1)
        grid.addWidget(self.strengthSpin, 2, 2)
        grid.addWidget(self.strengthNote, 3, 0, 1, 3)
        grid.setColumnStretch(1, 1)

        self.strengthSlider.valueChanged.connect(lambda v: self._push_strength(v / SLIDER_STEPS))
        self.strengthSpin.valueChanged.connect(self._push_strength)
        state.settingsChanged.connect(self._show_settings)
        state.initImageChanged.connect(self._show_init)
        state.initImageFileWanted.connect(self.load_file)  # Reuse of a PNG whose init image is a file
        state.runningChanged.connect(self._update_enabled)
        self._show_settings()
        self._show_init()

    # --- the box <-> GenerateState ---------------------------------------------------------
    def _push_strength(self, value: float) -> None:
        if not self._showing:
            self.state.update(strength=round(float(value), 2))

    def _show_settings(self, *_args: object) -> None:
        settings = self.state.settings
        self._showing = True
        try:
            self.strengthSlider.setValue(round(settings.strength * SLIDER_STEPS))
            if round(self.strengthSpin.value(), 2) != round(settings.strength, 2):
                self.strengthSpin.setValue(settings.strength)
        finally:
            self._showing = False
        self._update_note()

    def _show_init(self, *_args: object) -> None:
        init = self.state.init_image
        self.initImageView.set_image(None if init is None else init.thumbnail())
        if init is not None:
            self.initImageLabel.setText(init.describe())
            self.initImageLabel.setToolTip(str(init.path or init.source) + f"\nSHA-256 {init.sha256}")
        else:
            self.initImageLabel.setText(self.state.init_image_note or "None: generation starts from noise.")
            self.initImageLabel.setToolTip("")
        self._update_enabled()
        self._update_note()

    def _update_note(self) -> None:
        """What the strength does with the form's steps: round(strength·steps) of them run."""
        settings = self.state.settings
        if self.state.init_image is None:
            self.strengthNote.setText("Strength applies once an init image is set.")
            return
        n = max(1, round(settings.strength * settings.steps))
        self.strengthNote.setText(f"Noised to t = {settings.strength:.2f}·T, then {n} of {settings.steps} steps.")

    def _update_enabled(self, *_args: object) -> None:
        running, has_image = self.state.is_running, self.state.init_image is not None
        self.openInitButton.setEnabled(not running)
        self.pasteInitButton.setEnabled(not running)
        self.clearInitButton.setEnabled(has_image and not running)
        self.strengthSlider.setEnabled(has_image)
        self.strengthSpin.setEnabled(has_image)

    # --- where images come from --------------------------------------------------------------
    def load_file(self, path: str | Path, sha256: str = "") -> None:
        """Use an image file, read in the loader thread (`loadFinished` says how it ended); a file
        that cannot be read (or, with `sha256`, has changed) is a dialog and a note, never a traceback."""
        path = Path(path)
        model = self.state.model
        fit = (model.bundle.image_size, model.bundle.channels) if model is not None else None
        self.loader.load(path, fit, sha256)
        self.initImageLabel.setText(f"Reading {path.name}…")

    def _on_loaded(self, number: int, init: InitImage | None, error: str) -> None:
        if number != self.loader.latest:
            return  # a newer file was asked for meanwhile
        if init is None:
            self._refuse(error)
        else:
            self.state.set_init_image(init)
            self._show_init()  # the same image again still replaces "Reading…"
        self.loadFinished.emit(init is not None)

    def set_image(self, image: np.ndarray | QImage, source: str) -> bool:
        """Use pixels (the clipboard's, a dragged image's): quick, on the GUI thread."""
        self.loader.latest += 1  # a file still being read no longer replaces this
        try:
            pixels = image_from_qimage(image) if isinstance(image, QImage) else image
            if isinstance(image, QImage) and image.isNull():
                raise UsageError(f"The {source} holds no image.")
            self.state.set_init_image(InitImage.from_image(pixels, source))
        except UsageError as exc:
            self._refuse(str(exc))
            return False
        return True

    def clear(self) -> None:
        """Back to text-to-image (a file still being read is dropped too)."""
        self.loader.latest += 1
        self.state.set_init_image(None)

    def open_dialog(self) -> None:
        target, _ = QFileDialog.getOpenFileName(self, "Open init image", str(Path.home()), IMAGE_FILTER)
        if target:
            self.load_file(target)

    def paste(self) -> bool:
        """The clipboard's image, or the image file it names (a copied file: read in the thread)."""
        mime = QGuiApplication.clipboard().mimeData()
        files = local_files(mime) if mime is not None else []
        if files:
            self.load_file(files[0])
            return True
        if mime is not None and mime.hasImage():
            return self.set_image(QImage(mime.imageData()), "clipboard")
        self._refuse("The clipboard holds no image to paste.")
        return False

    def _refuse(self, sentence: str) -> None:
        if self.state.init_image is None:
            self.state.set_init_image(None, sentence)  # the note stays under the empty box
        self.initImageLabel.setText(sentence)
        self.errorOccurred.emit("Cannot use the init image", sentence)

    # --- drag and drop, Ctrl+V ---------------------------------------------------------------
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        mime = event.mimeData()
        if local_files(mime) or mime.hasImage():
            event.acceptProposedAction()

    def dragMoveEvent(self, event: QDragEnterEvent) -> None:  # type: ignore[override]
        self.dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        """A file (a PNG too: here it is the init image, not settings) or an image dragged in."""
        mime = event.mimeData()
        files = local_files(mime)
        if files:
            event.acceptProposedAction()
            self.load_file(files[0])
        elif mime.hasImage():
            event.acceptProposedAction()
            self.set_image(QImage(mime.imageData()), "dropped image")

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.matches(QKeySequence.StandardKey.Paste):
            self.paste()
            return
        super().keyPressEvent(event)

"""`ImageView`: shows a small numpy image large, crisp on high-DPI screens.

The model's images are tiny (32×32), so the view scales them up to fill the widget.
Nearest-neighbour zoom uses whole multiples of the image size in *device* pixels, so
every source pixel becomes an equal square on any devicePixelRatio; smooth zoom lets
Qt filter. Transparent parts of the image show a canvas derived from the palette's window colour, so the view
follows the light or dark theme; the placeholder text uses the palette too.
"""

from __future__ import annotations

import math
import os

import numpy as np
from PySide6.QtCore import QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QImage, QPainter, QPaintEvent, QPalette, QPixmap, QRegion
from PySide6.QtWidgets import QSizePolicy, QWidget

from diffusion_studio.core import png_meta
from diffusion_studio.ui.widgets.hats import hat_font


def qimage_from_array(image: np.ndarray) -> QImage:
    """uint8 [H, W] / [H, W, 1|3|4] -> a QImage that owns its pixels (a deep copy)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 image, got {image.dtype}.")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        fmt, channels = QImage.Format.Format_Grayscale8, 1
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        channels = image.shape[2]
        fmt = QImage.Format.Format_RGB888 if channels == 3 else QImage.Format.Format_RGBA8888
    else:
        raise ValueError(f"Expected an image [H, W, C] with C in 1, 3, 4, got {image.shape}.")
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    return QImage(image.data, w, h, w * channels, fmt).copy()


def read_image_array(path: str | os.PathLike[str], what: str = "The image", alpha: bool = True) -> np.ndarray:
    """An image file as uint8 [H, W, 3] (or [H, W, 4] when it has transparency and `alpha`).

    Decoding goes through `core.png_meta.read_image`, so every failure (missing, not an
    image, a decompression bomb) is a UsageError with one sentence starting with `what`.
    """
    image = png_meta.read_image(path, what)
    transparent = image.mode in ("RGBA", "LA", "P") or "transparency" in image.info
    return np.asarray(image.convert("RGBA" if alpha and transparent else "RGB"))


def fit_rect(image_size: QSize, area: QSize, dpr: float, smooth: bool) -> QRectF:
    """Where (in logical pixels) an image of `image_size` is drawn centred in `area`.

    Nearest: the largest whole scale in device pixels that fits (at least 1 device pixel
    per image pixel, shrinking by fractions only if even that does not fit). Smooth: the
    largest aspect-preserving fit.
    """
    iw, ih = image_size.width(), image_size.height()
    if iw <= 0 or ih <= 0 or area.width() <= 0 or area.height() <= 0:
        return QRectF()
    fit = min(area.width() * dpr / iw, area.height() * dpr / ih)  # device pixels per image pixel
    scale = fit if smooth or fit < 1 else math.floor(fit)
    w, h = iw * scale / dpr, ih * scale / dpr
    return QRectF((area.width() - w) / 2, (area.height() - h) / 2, w, h)


def _inner_rect(rect: QRectF) -> QRect:
    """The largest whole-pixel rectangle inside `rect` (pixels the image covers completely)."""
    left, top = math.ceil(rect.left()), math.ceil(rect.top())
    right, bottom = math.floor(rect.right()), math.floor(rect.bottom())
    return QRect(left, top, max(0, right - left), max(0, bottom - top))


class ImageView(QWidget):
    """A read-only picture view over a numpy image (previews, results, history)."""

    imageChanged = Signal()

    def __init__(self, parent: QWidget | None = None, placeholder: str = "") -> None:
        super().__init__(parent)
        self._array: np.ndarray | None = None
        self._image: QImage | None = None
        self._smooth = False
        self._placeholder = placeholder
        self._opaque = False  # every pixel of the image has alpha 255 (nothing shows through)
        self._panel_labels: tuple[str, ...] = ()  # names of equal-width panels, left to right
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 160)
        self.setAutoFillBackground(False)
        # paintEvent covers every pixel itself, so Qt need not paint the parents underneath.
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setAccessibleName("Image")

    # --- state -----------------------------------------------------------------------------
    def set_image(self, image: np.ndarray | None) -> None:
        """Show a uint8 image (or nothing: then the placeholder text).

        Live previews call this up to 30 times a second: when the new image has the size
        and opacity of the old one, only the image's rectangle is repainted.
        """
        old_rect, old_opaque = self.image_rect(), self._opaque
        if image is None:
            self._array, self._image, self._opaque = None, None, False
        else:
            self._image = qimage_from_array(image)
            self._array = np.array(image, copy=True)
            array = self._array
            self._opaque = array.ndim == 2 or array.shape[-1] != 4 or bool((array[..., 3] == 255).all())
        new_rect = self.image_rect()
        if not old_rect.isEmpty() and new_rect == old_rect and self._opaque == old_opaque:
            self.update(new_rect.toAlignedRect())
        else:
            self.update()
        self.imageChanged.emit()

    def image_array(self) -> np.ndarray | None:
        """A copy of the shown image as given to `set_image`."""
        return None if self._array is None else self._array.copy()

    def qimage(self) -> QImage | None:
        return None if self._image is None else QImage(self._image)

    def pixmap(self) -> QPixmap | None:
        return None if self._image is None else QPixmap.fromImage(self._image)

    def set_smooth(self, smooth: bool) -> None:
        """Smooth (bilinear) zoom instead of nearest-neighbour squares."""
        self._smooth = bool(smooth)
        self.update()

    def is_smooth(self) -> bool:
        return self._smooth

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    def placeholder(self) -> str:
        return self._placeholder

    def set_panel_labels(self, labels: tuple[str, ...] | list[str]) -> None:
        """Name the image's equal-width panels left to right (side by side: x_t, x̂₀, ε̂); () for none."""
        labels = tuple(labels)
        if labels != self._panel_labels:
            self._panel_labels = labels
            self.update()

    def panel_labels(self) -> tuple[str, ...]:
        return self._panel_labels

    def panel_label_rects(self) -> list[QRectF]:
        """Where each panel label is drawn: centred over its panel, above the image when there is room."""
        rect = self.image_rect()
        if not self._panel_labels or rect.isEmpty():
            return []
        metrics = QFontMetricsF(self._label_font())
        height = metrics.height() + 4
        top = rect.top() - height if rect.top() >= height else rect.top()
        width = rect.width() / len(self._panel_labels)
        return [QRectF(rect.left() + i * width, top, width, height) for i in range(len(self._panel_labels))]

    def _label_font(self) -> QFont:
        font = hat_font(self.font())
        font.setBold(True)
        if font.pointSizeF() > 0:
            font.setPointSizeF(font.pointSizeF() * 1.25)
        return font

    def image_rect(self) -> QRectF:
        """The logical rectangle the image occupies in the widget (empty when none)."""
        if self._image is None:
            return QRectF()
        return fit_rect(self._image.size(), self.size(), self.devicePixelRatioF(), self._smooth)

    # --- Qt --------------------------------------------------------------------------------
    def sizeHint(self) -> QSize:
        return QSize(512, 512)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        try:
            palette = self.palette()
            # A canvas a shade off the window colour: follows light and dark palettes. An opaque
            # image hides the canvas under it, so only the rest of the dirty region is filled.
            canvas = QRegion(event.rect())
            if self._image is not None and self._opaque:
                canvas -= QRegion(_inner_rect(self.image_rect()))
            painter.setClipRegion(canvas)
            painter.fillRect(event.rect(), palette.color(QPalette.ColorRole.Window).darker(112))
            painter.setClipping(False)
            if self._image is None:
                if self._placeholder:
                    painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
                    margin = self.rect().adjusted(16, 16, -16, -16)
                    painter.drawText(
                        margin, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._placeholder
                    )
                return
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self._smooth)
            painter.drawImage(self.image_rect(), self._image)
            self._paint_panel_labels(painter, palette)
        finally:
            painter.end()

    def _paint_panel_labels(self, painter: QPainter, palette: QPalette) -> None:
        rects = self.panel_label_rects()
        if not rects:
            return
        painter.setFont(self._label_font())
        inside = rects[0].top() >= self.image_rect().top()  # no room above: a plate over the image
        for rect, text in zip(rects, self._panel_labels, strict=True):
            if inside:
                width = QFontMetricsF(painter.font()).horizontalAdvance(text) + 10
                plate = QRectF(rect.center().x() - width / 2, rect.top(), width, rect.height())
                painter.fillRect(plate, QColor(0, 0, 0, 160))
                painter.setPen(QColor(255, 255, 255))
            else:
                painter.setPen(palette.color(QPalette.ColorRole.WindowText))
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)

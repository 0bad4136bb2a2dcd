"""Small icons painted in the palette's text colour (so they follow light and dark themes).

Painting them keeps the app free of icon-font and theme dependencies: a padlock (open or
closed) for the seed lock and a die for a random seed.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import QApplication

ICON_SIZE = 32  # drawn at 2x so they stay sharp on high-DPI screens


def _canvas(dpr: float = 2.0) -> tuple[QPixmap, QPainter, QColor]:
    pixmap = QPixmap(int(ICON_SIZE * dpr), int(ICON_SIZE * dpr))
    pixmap.setDevicePixelRatio(dpr)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    color = QApplication.palette().color(QPalette.ColorRole.ButtonText)
    return pixmap, painter, color


def padlock_icon(locked: bool) -> QIcon:
    """A padlock; the shackle is open when `locked` is False."""
    pixmap, painter, color = _canvas()
    pen = QPen(color, 3.0)
    painter.setPen(pen)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    shackle = QRectF(9, 3, 14, 16) if locked else QRectF(15, 1, 14, 16)
    painter.drawArc(shackle, 0, 180 * 16)
    painter.drawLine(QPointF(shackle.left(), 11), QPointF(shackle.left(), 16))
    if locked:
        painter.drawLine(QPointF(shackle.right(), 11), QPointF(shackle.right(), 16))
    painter.setBrush(color)
    painter.drawRoundedRect(QRectF(6, 15, 20, 14), 3, 3)
    painter.end()
    return QIcon(pixmap)


def dice_icon() -> QIcon:
    """A die showing five."""
    pixmap, painter, color = _canvas()
    painter.setPen(QPen(color, 2.5))
    painter.setBrush(Qt.BrushStyle.NoBrush)
    painter.drawRoundedRect(QRectF(4, 4, 24, 24), 5, 5)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(color)
    for x, y in ((10, 10), (22, 10), (16, 16), (10, 22), (22, 22)):
        painter.drawEllipse(QPointF(x, y), 2.4, 2.4)
    painter.end()
    return QIcon(pixmap)


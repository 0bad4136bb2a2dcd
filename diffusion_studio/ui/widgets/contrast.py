"""Readable secondary text: WCAG 2 contrast ratios and a muted colour that still passes 4.5:1.

Qt's disabled text colour (what `setEnabled(False)` gives a label) is about 2.5:1 on the usual
light palette: too faint to read a description. `muted_color` mixes the text colour towards
the background only as far as the ratio stays at or above `minimum`.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QWidget

WCAG_AA = 4.5  # normal-size text, WCAG 2.1 success criterion 1.4.3


def relative_luminance(color: QColor) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0 black … 1 white)."""

    def channel(value: int) -> float:
        c = value / 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(color.red()) + 0.7152 * channel(color.green()) + 0.0722 * channel(color.blue())


def contrast_ratio(a: QColor, b: QColor) -> float:
    """(L_lighter + 0.05) / (L_darker + 0.05), from 1 (same) to 21 (black on white)."""
    la, lb = relative_luminance(a), relative_luminance(b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


def _mix(fg: QColor, bg: QColor, amount: float) -> QColor:
    channels = zip((fg.red(), fg.green(), fg.blue()), (bg.red(), bg.green(), bg.blue()), strict=True)
    return QColor(*(round(f + (b - f) * amount) for f, b in channels))


def muted_color(fg: QColor, bg: QColor, minimum: float = WCAG_AA, amount: float = 0.45) -> QColor:
    """`fg` mixed `amount` of the way towards `bg`, or less, so the contrast stays ≥ `minimum`."""
    while amount > 0 and contrast_ratio(_mix(fg, bg, amount), bg) < minimum:
        amount -= 0.01
    return _mix(fg, bg, max(0.0, amount))


def set_muted(widget: QWidget) -> QColor:
    """Secondary text on `widget` in a muted colour that keeps WCAG AA contrast on its window colour."""
    palette = widget.palette()
    color = muted_color(palette.color(QPalette.ColorRole.WindowText), palette.color(QPalette.ColorRole.Window))
    palette.setColor(QPalette.ColorRole.WindowText, color)
    palette.setColor(QPalette.ColorRole.Text, color)
    widget.setPalette(palette)
    return color

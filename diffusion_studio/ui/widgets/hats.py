"""A font that draws the hats of x̂₀ and ε̂ where they belong.

x̂₀ and ε̂ are a letter plus U+0302 (combining circumflex); no precomposed character exists.
Whether the hat lands on the letter depends on the font: DejaVu Sans (the usual Linux UI
font) drops it on "x" and puts it beside "ε", DejaVu Serif places both. `hat_font` draws each
symbol with a candidate font, checks from the pixels that the hat's ink sits above its letter,
and returns the first font that passes (the widget's own font first), at the widget's size.
Menus, the Show combo and captions use it.
"""

from __future__ import annotations

import functools

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QFont, QFontDatabase, QImage, QPainter

HAT = "\u0302"
TILDE = "\u0303"
SYMBOLS = ("x", "\u03b5")  # x̂₀ and ε̂
HATS = (("x", HAT), ("\u03b5", HAT))
BETA_TILDE = (("\u03b2", TILDE),)  # β̃ of the posterior variance
FALLBACK_FAMILIES = ("DejaVu Serif", "Noto Serif", "Noto Sans", "STIX Two Text", "Liberation Serif",
                     "Cambria", "Times New Roman", "Segoe UI", "Helvetica Neue")
_PX = 48


def _ink(font: QFont, text: str) -> np.ndarray:
    """Boolean ink mask of `text` drawn at 48 px."""
    font = QFont(font)
    font.setPixelSize(_PX)
    image = QImage(_PX * 3, _PX * 2, QImage.Format.Format_Grayscale8)
    image.fill(255)
    painter = QPainter(image)
    painter.setFont(font)
    painter.setPen(Qt.GlobalColor.black)
    painter.drawText(_PX // 2, int(_PX * 1.5), text)
    painter.end()
    pixels = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return pixels[:, : image.width()] < 128


def hat_lands(font: QFont, letter: str, mark: str = HAT) -> bool:
    """True when `letter` + `mark` (a combining mark above) draws the mark above the letter, within its width."""
    base, hatted = _ink(font, letter), _ink(font, letter + mark)
    hat = hatted & ~base
    if not base.any() or hat.sum() < 4:
        return False
    rows, cols = np.nonzero(base)
    hat_rows, hat_cols = np.nonzero(hat)
    margin = max(2, (cols.max() - cols.min()) // 4)
    above = hat_rows.max() < rows.min() + 2
    over = cols.min() - margin <= hat_cols.min() and hat_cols.max() <= cols.max() + margin
    return bool(above and over)


def draws_hats(font: QFont, marks: tuple[tuple[str, str], ...] = HATS) -> bool:
    return all(hat_lands(font, letter, mark) for letter, mark in marks)


@functools.lru_cache(maxsize=16)
def _family_for(family: str, marks: tuple[tuple[str, str], ...]) -> str:
    candidates = [family, *[f for f in FALLBACK_FAMILIES if f in set(QFontDatabase.families())]]
    for candidate in candidates:
        if draws_hats(QFont(candidate), marks):
            return candidate
    return family


def hat_font(font: QFont, marks: tuple[tuple[str, str], ...] = HATS) -> QFont:
    """`font`, or a font of the same size whose family draws x̂ and ε̂ (or the given `marks`) correctly."""
    result = QFont(font)
    family = _family_for(font.family(), marks)
    if family != font.family():
        result.setFamilies([family, *font.families()])
    return result

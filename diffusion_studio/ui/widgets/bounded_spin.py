"""Spin boxes that say when they change what the user typed.

A plain QSpinBox drops the keystroke that would leave its range (typing 100000 into a box
that ends at 64 leaves "10") and quietly restores the old value when the text is below the
minimum (steps 0). These boxes keep the typed text until the edit ends, then take the nearest
value in range and emit `adjusted` with a sentence ("At most 64 images per run: 100000 became
64."); the panel shows it under the field. The note clears on the next edit.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QDoubleSpinBox, QSpinBox, QWidget


class _ClampNotes:
    """The shared behaviour; the Qt class after it in the bases provides the spin box."""

    limit_reason: str
    _pending: float | None

    def _setup(self, limit_reason: str) -> None:
        self.limit_reason = limit_reason  # e.g. "for this model" (after "at most N")
        self._pending = None  # the number typed since the last edit ended
        self.editingFinished.connect(self._finish)  # type: ignore[attr-defined]
        self.lineEdit().textEdited.connect(self._on_edited)  # type: ignore[attr-defined]

    def _parse(self, body: str) -> float | None:
        raise NotImplementedError

    def _typed(self, text: str) -> float | None:
        body = text.removeprefix(self.prefix()).removesuffix(self.suffix()).strip()  # type: ignore[attr-defined]
        return self._parse(body.replace(",", "")) if body else None

    def _validate_range(self, text: str, pos: int) -> tuple[QValidator.State, str, int] | None:
        """Any number is worth keeping while typing (Intermediate when out of range)."""
        number = self._typed(text)
        if number is not None and not self.minimum() <= number <= self.maximum():  # type: ignore[attr-defined]
            return QValidator.State.Intermediate, text, pos
        return None

    def clamp(self, number: float) -> float:
        return min(max(number, self.minimum()), self.maximum())  # type: ignore[attr-defined]

    def note_for(self, number: float) -> str:
        """The sentence for a typed `number` outside the range ("" inside it)."""
        reason = f" {self.limit_reason}" if self.limit_reason else ""
        shown = self._show(number)
        if number > self.maximum():  # type: ignore[attr-defined]
            high = self._show(self.maximum())  # type: ignore[attr-defined]
            return f"At most {high}{reason}: {shown} became {high}."
        if number < self.minimum():  # type: ignore[attr-defined]
            low = self._show(self.minimum())  # type: ignore[attr-defined]
            return f"At least {low}: {shown} became {low}."
        return ""

    def _show(self, number: float) -> str:
        return f"{number:g}"

    def _on_edited(self, text: str) -> None:
        self._pending = self._typed(text)
        self.adjusted.emit("")  # type: ignore[attr-defined]

    def _finish(self) -> None:
        """The edit ended (Enter or focus out): Qt has clamped the value through `fixup`; say so."""
        number, self._pending = self._pending, None
        if number is None:
            return
        note = self.note_for(number)
        if note:
            self.setValue(self.clamp(number))  # type: ignore[attr-defined]
            self.adjusted.emit(note)  # type: ignore[attr-defined]


class BoundedSpinBox(_ClampNotes, QSpinBox):
    """An integer spin box whose out-of-range typing is clamped with a message, never dropped."""

    adjusted = Signal(str)  # a sentence: what was typed and the value it became ("" clears it)

    def __init__(self, parent: QWidget | None = None, *, limit_reason: str = "", **kwargs: Any) -> None:
        QSpinBox.__init__(self, parent, **kwargs)
        self._setup(limit_reason)

    def _parse(self, body: str) -> float | None:
        return int(body) if body.lstrip("+-").isdigit() else None

    def _show(self, number: float) -> str:
        return str(int(number))

    def clamp(self, number: float) -> int:
        return int(super().clamp(number))

    def validate(self, text: str, pos: int) -> tuple[QValidator.State, str, int]:
        return self._validate_range(text, pos) or QSpinBox.validate(self, text, pos)

    def fixup(self, text: str) -> str:
        number = self._typed(text)
        return QSpinBox.fixup(self, text) if number is None else self.textFromValue(self.clamp(number))


class BoundedDoubleSpinBox(_ClampNotes, QDoubleSpinBox):
    """A decimal spin box whose out-of-range typing is clamped with a message, never dropped."""

    adjusted = Signal(str)

    def __init__(self, parent: QWidget | None = None, *, limit_reason: str = "", **kwargs: Any) -> None:
        QDoubleSpinBox.__init__(self, parent, **kwargs)
        self._setup(limit_reason)

    def _parse(self, body: str) -> float | None:
        try:
            return float(body)
        except ValueError:
            return None

    def validate(self, text: str, pos: int) -> tuple[QValidator.State, str, int]:
        return self._validate_range(text, pos) or QDoubleSpinBox.validate(self, text, pos)

    def fixup(self, text: str) -> str:
        number = self._typed(text)
        return QDoubleSpinBox.fixup(self, text) if number is None else self.textFromValue(self.clamp(number))

"""A QSpinBox that says when it changes what the user typed.

A plain QSpinBox drops the keystroke that would leave its range (typing 100000 into a box
that ends at 64 leaves "10") and quietly restores the old value when the text is below the
minimum (steps 0). `BoundedSpinBox` keeps the typed text until the edit ends, then takes the
nearest value in range and emits `adjusted` with a sentence ("At most 64 for this model: 100000
became 64."); the panel shows it under the field. The note clears on the next edit.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import QSpinBox, QWidget


class BoundedSpinBox(QSpinBox):
    """An integer spin box whose out-of-range typing is clamped with a message, never dropped."""

    adjusted = Signal(str)  # a sentence: what was typed and the value it became ("" clears it)

    def __init__(self, parent: QWidget | None = None, *, limit_reason: str = "", **kwargs: object) -> None:
        super().__init__(parent, **kwargs)
        self.limit_reason = limit_reason  # e.g. "for this model" (after "at most N")
        self.editingFinished.connect(self._finish)
        self._pending: int | None = None  # the number typed since the last edit ended
        self.lineEdit().textEdited.connect(self._on_edited)

    def _typed(self, text: str) -> int | None:
        body = text.removeprefix(self.prefix()).removesuffix(self.suffix()).strip().replace(",", "")
        if not body or not body.lstrip("+-").isdigit():
            return None
        return int(body)

    def validate(self, text: str, pos: int) -> tuple[QValidator.State, str, int]:
        """Any whole number is worth keeping while typing (Intermediate when out of range)."""
        number = self._typed(text)
        if number is not None and not self.minimum() <= number <= self.maximum():
            return QValidator.State.Intermediate, text, pos
        return super().validate(text, pos)

    def fixup(self, text: str) -> str:
        number = self._typed(text)
        if number is None:
            return super().fixup(text)
        return self.textFromValue(self.clamp(number))

    def clamp(self, number: int) -> int:
        return min(max(number, self.minimum()), self.maximum())

    def note_for(self, number: int) -> str:
        """The sentence for a typed `number` outside the range ("" inside it)."""
        reason = f" {self.limit_reason}" if self.limit_reason else ""
        if number > self.maximum():
            return f"At most {self.maximum()}{reason}: {number} became {self.maximum()}."
        if number < self.minimum():
            return f"At least {self.minimum()}: {number} became {self.minimum()}."
        return ""

    def _on_edited(self, text: str) -> None:
        self._pending = self._typed(text)
        self.adjusted.emit("")

    def _finish(self) -> None:
        """The edit ended (Enter or focus out): Qt has clamped the value through `fixup`; say so."""
        number, self._pending = self._pending, None
        note = self.note_for(number) if number is not None else ""
        if note:
            self.setValue(self.clamp(number))
            self.adjusted.emit(note)

"""The seed field: a line edit for the full seed range the pipeline accepts (0 … 2⁶³−1).

QSpinBox holds a 32-bit int, so seeds from other tools (3 000 000 000) or written by the
CLI (up to 2⁶³−1) would not fit. `SeedEdit` is a QLineEdit with a validator for that
range and the spin-box calls the form uses (`value()`, `setValue()`, `valueChanged`);
Up/Down step the seed by one, like a spin box.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFocusEvent, QKeyEvent, QValidator
from PySide6.QtWidgets import QLineEdit, QWidget

from diffusion_studio.core.params import SEED_MAX


class SeedValidator(QValidator):
    """Decimal integers in [0, maximum]; an empty field is Intermediate (being typed)."""

    def __init__(self, maximum: int = SEED_MAX, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.maximum = maximum

    def validate(self, text: str, pos: int) -> QValidator.State:
        stripped = text.strip()
        if not stripped:
            return QValidator.State.Intermediate
        if not stripped.isdigit() or not stripped.isascii():
            return QValidator.State.Invalid
        return QValidator.State.Acceptable if int(stripped) <= self.maximum else QValidator.State.Invalid


class SeedEdit(QLineEdit):
    """A seed field with spin-box semantics over 0 … `maximum` (default 2⁶³−1)."""

    valueChanged = Signal(object)  # int (a Python int: 64-bit values do not fit a Qt int signal)

    def __init__(self, value: int = 0, maximum: int = SEED_MAX, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._maximum = maximum
        self._value = 0
        self.setValidator(SeedValidator(maximum, self))
        self.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.setAccessibleName("Seed")
        self.setMaxLength(len(str(maximum)))
        self.textEdited.connect(self._on_text_edited)
        self.editingFinished.connect(self._show_value)
        self.setValue(value)

    def minimum(self) -> int:
        return 0

    def maximum(self) -> int:
        return self._maximum

    def value(self) -> int:
        """The last valid seed (an empty field being typed keeps the previous one)."""
        return self._value

    def setValue(self, value: int) -> None:
        """Show `value` clamped to 0 … maximum, like QSpinBox.setValue."""
        clamped = min(max(int(value), 0), self._maximum)
        changed = clamped != self._value
        self._value = clamped
        if self.text() != str(clamped):
            self.setText(str(clamped))
        if changed:
            self.valueChanged.emit(clamped)

    def stepBy(self, steps: int) -> None:
        self.setValue(self._value + steps)

    def _on_text_edited(self, text: str) -> None:
        if text.strip().isdigit():  # the validator already keeps it within range
            value = int(text.strip())
            if value != self._value:
                self._value = value
                self.valueChanged.emit(value)

    def _show_value(self) -> None:
        """Editing ended: an empty field shows the seed in use again."""
        if self.text().strip() != str(self._value):
            self.setText(str(self._value))

    def focusOutEvent(self, event: QFocusEvent) -> None:
        super().focusOutEvent(event)
        self._show_value()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        step: dict[int, int] = {Qt.Key.Key_Up: 1, Qt.Key.Key_Down: -1, Qt.Key.Key_PageUp: 10, Qt.Key.Key_PageDown: -10}
        if event.key() in step:  # Qt.Key is an IntEnum: the int key code looks it up
            self.stepBy(step[event.key()])
            event.accept()
            return
        super().keyPressEvent(event)

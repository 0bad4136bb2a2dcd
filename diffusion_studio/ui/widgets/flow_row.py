"""`FlowRow`: a layout that places its widgets left to right and wraps them onto further rows
when the width runs out (its minimum width is its widest widget), so a row of small controls
fits a narrow panel without a horizontal scroll bar.

It does not declare height-for-width (that would make a QScrollArea around the page lay the
whole page out at preferred heights); instead its height is the one its last width needed,
and it asks for a new layout pass when a resize changes the number of rows."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtWidgets import QLayout, QLayoutItem, QWidget


class FlowRow(QLayout):
    def __init__(self, parent: QWidget | None = None, spacing: int = 8, line_spacing: int = 4) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing = spacing
        self._line_spacing = line_spacing
        self._height = -1  # the height the last laid-out width needed (-1: one row, not laid out yet)
        self.setContentsMargins(0, 0, 0, 0)

    # --- QLayout's item list ---------------------------------------------------------------
    def addItem(self, item: QLayoutItem) -> None:
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    # --- geometry --------------------------------------------------------------------------
    def expandingDirections(self) -> Qt.Orientation:
        return Qt.Orientation(0)

    def setGeometry(self, rect: QRect) -> None:
        super().setGeometry(rect)
        height = self._place(rect, move=True)
        if height != self._height:
            self._height = height
            self.invalidate()  # another number of rows: the parent lays out again (posted, not recursive)

    def _rows_height(self, one_row: int) -> int:
        return one_row if self._height < 0 else max(one_row, self._height)

    def sizeHint(self) -> QSize:
        """Everything on one row."""
        hints = [item.sizeHint() for item in self._items if not item.isEmpty()]
        width = sum(h.width() for h in hints) + self._spacing * max(0, len(hints) - 1)
        m = self.contentsMargins()
        one_row = max((h.height() for h in hints), default=0) + m.top() + m.bottom()
        return QSize(width + m.left() + m.right(), self._rows_height(one_row))

    def minimumSize(self) -> QSize:
        """The widest widget (one per row at the narrowest)."""
        size = QSize()
        for item in self._items:
            size = size.expandedTo(item.sizeHint())
        m = self.contentsMargins()
        size += QSize(m.left() + m.right(), m.top() + m.bottom())
        return QSize(size.width(), self._rows_height(size.height()))

    def _place(self, rect: QRect, move: bool) -> int:
        """Lay the items out in rows inside `rect` (moving them when `move`, each centred in its
        row's height); returns the height used."""
        m = self.contentsMargins()
        area = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        rows: list[list[tuple[QLayoutItem, QSize]]] = [[]]
        x = area.x()
        for item in self._items:
            if item.isEmpty():
                continue
            hint = item.sizeHint()
            if rows[-1] and x + hint.width() > area.right() + 1:  # wrap onto the next row
                rows.append([])
                x = area.x()
            rows[-1].append((item, hint))
            x += hint.width() + self._spacing
        y = area.y()
        for row in rows:
            if not row:
                continue
            height = max(hint.height() for _, hint in row)
            x = area.x()
            for item, hint in row:
                if move:
                    item.setGeometry(QRect(QPoint(x, y + (height - hint.height()) // 2), hint))
                x += hint.width() + self._spacing
            y += height + self._line_spacing
        return max(0, y - self._line_spacing - rect.y()) + m.bottom()

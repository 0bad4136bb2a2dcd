"""`FlowRow`: one row when there is room, more rows when narrow, never narrower than its widest widget."""

from __future__ import annotations

from PySide6.QtWidgets import QPushButton, QVBoxLayout, QWidget

from diffusion_studio.ui.widgets.flow_row import FlowRow


def test_widgets_wrap_onto_rows_as_the_width_shrinks(qtbot) -> None:
    host = QWidget()
    outer = QVBoxLayout(host)
    row = FlowRow(spacing=10)
    buttons = [QPushButton(text) for text in ("first button", "second", "a rather wide third button")]
    for button in buttons:
        button.setFixedSize(button.sizeHint())
        row.addWidget(button)
    outer.addLayout(row)
    outer.addStretch(1)
    qtbot.addWidget(host)
    host.show()
    qtbot.waitExposed(host)
    widths = [b.width() for b in buttons]
    assert row.minimumSize().width() == max(widths)

    def tops() -> list[int]:
        qtbot.wait(20)  # a change in the number of rows is laid out on the next pass
        return [b.y() for b in buttons]

    host.resize(sum(widths) + 20 + 60, 200)
    assert len(set(tops())) == 1  # one row, left to right
    assert buttons[0].x() < buttons[1].x() < buttons[2].x()
    host.resize(widths[0] + widths[1] + 10 + 30, 200)
    first, second, third = tops()
    assert first == second < third  # the wide one wrapped
    assert row.sizeHint().height() >= third + buttons[2].height() - first
    host.resize(10, 200)  # below the minimum: the host stops at the widest widget
    qtbot.wait(20)
    assert host.width() >= max(widths)
    assert all(b.x() + b.width() <= host.width() for b in buttons)  # nothing sticks out

"""A batch is one expandable group in the history, in the same order after a restart (issue 11 §6)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from diffusion_studio.ui.generate.history import HistoryStore, batch_key
from diffusion_studio.ui.generate.history_panel import HistoryPanel


def _batch(store: HistoryStore, prompt: str, seed: int, size: int, created: str, times: list[float]) -> list:
    image = np.zeros((4, 4, 3), np.uint8)
    entries = []
    for i in range(size):
        meta = {"prompt": prompt, "seed": seed + i, "steps": 5, "batch_size": size, "batch_index": i,
                "created": created}
        entry = store.add(image, meta, index=i)
        os.utime(entry.path, (times[i], times[i]))
        entries.append(entry)
    return entries


def _rows(panel: HistoryPanel) -> list[tuple[str, bool]]:
    lst = panel.historyList
    return [(lst.item(i).text(), lst.item(i).isHidden()) for i in range(lst.count())]


def test_batches_group_in_a_stable_order_and_expand(qtbot, tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history")
    # Files of one batch written out of order (image 2 older than image 0): the order must not follow it.
    old = _batch(store, "old batch", 10, 3, "2026-01-01T10:00:00+00:00", [1000.0, 1002.0, 999.0])
    single = _batch(store, "single", 50, 1, "2026-01-01T11:00:00+00:00", [2000.0])
    assert batch_key(single[0]) is None and batch_key(old[0]) == batch_key(old[2])

    panel = HistoryPanel(store)
    qtbot.addWidget(panel)
    assert [e.metadata["seed"] for e in panel.entries()] == [50, 10, 11, 12]  # newest run first, batch in order
    assert _rows(panel) == [
        ("single\nseed 50 · 5 steps", False),
        ("old batch\n▸ batch of 3 · seed 10 · 5 steps", False),
        ("    ↳ seed 11 · 5 steps", True),  # collapsed
        ("    ↳ seed 12 · 5 steps", True),
    ]
    head = panel.historyList.item(1)
    assert panel.is_batch_head(head) and not panel.is_batch_head(panel.historyList.item(2))
    panel.historyList.itemDoubleClicked.emit(head)  # double-click the head: open
    assert [hidden for _text, hidden in _rows(panel)] == [False] * 4
    assert panel.historyList.item(1).text().startswith("old batch\n▾ batch of 3")
    panel.historyList.setCurrentRow(3)
    panel.toggle_batch(panel.historyList.item(3))  # closing from a member keeps a visible selection
    assert panel.historyList.currentRow() == 1 and panel.selected_entry().metadata["seed"] == 10

    # A new batch arrives on top, open, in batch order.
    new = _batch(store, "new batch", 70, 2, "2026-01-01T12:00:00+00:00", [3000.0, 3000.0])
    panel.add_entries(new)
    assert [e.metadata["seed"] for e in panel.entries()][:2] == [70, 71]
    assert _rows(panel)[:2] == [("new batch\n▾ batch of 2 · seed 70 · 5 steps", False),
                                ("    ↳ seed 71 · 5 steps", False)]
    order = [e.path for e in panel.entries()]

    restarted = HistoryPanel(HistoryStore(tmp_path / "history"))  # the app starts again
    qtbot.addWidget(restarted)
    assert [e.path for e in restarted.entries()] == order
    assert restarted.countLabel.text() == "History · 6 images"

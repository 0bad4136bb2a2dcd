"""HistoryStore: PNG files with metadata, newest first, foreign files skipped, deletion."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from diffusion_studio.core import png_meta
from diffusion_studio.errors import UsageError
from diffusion_studio.ui.generate.history import HistoryStore
from diffusion_studio.ui.generate.history_panel import format_details


def test_add_writes_png_with_metadata_and_lists_newest_first(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history")
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    first = store.add(image, {"prompt": "one", "seed": 1, "steps": 5})
    os.utime(first.path, (1_000_000, 1_000_000))  # make the first clearly older
    second = store.add(image, {"prompt": "two", "seed": 1, "steps": 5})
    assert first.path != second.path  # same second, same seed: still two files
    entries = store.entries()
    assert [e.metadata["prompt"] for e in entries] == ["two", "one"]
    assert png_meta.read_metadata(second.path)["prompt"] == "two"
    assert entries[0].title == "two" and entries[0].subtitle == "seed 1 · 5 steps"
    other = HistoryStore(tmp_path / "b").add(image, {"prompt": "p", "seed": 2, "sampler": "ddim"})
    assert other.subtitle == "seed 2 · DDIM"
    assert not list((tmp_path / "history").glob("*.tmp-*"))


def test_foreign_files_are_skipped_and_delete_removes(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("hello")
    entry = store.add(np.zeros((2, 2, 3), np.uint8), {"prompt": "x" * 100, "seed": 3})
    assert [e.path for e in store.entries()] == [entry.path]
    assert entry.title.endswith("…") and len(entry.title) == 58
    store.delete(entry)
    assert store.entries() == [] and not entry.path.exists()
    store.delete(entry)  # already gone: nothing to do


def test_unwritable_history_folder_is_a_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="history folder"):
        HistoryStore(blocker / "history")


def test_details_list_known_fields_first(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    entry = store.add(np.zeros((2, 2, 3), np.uint8), {
        "prompt": "a", "negative_prompt": "b", "sampler": "dpmpp-2m", "steps": 20,
        "guidance": 3.0, "seed": 9, "width": 32, "height": 32, "batch_size": 4, "batch_index": 1, "extra": 1})
    lines = format_details(entry).splitlines()
    assert lines[:6] == ["Prompt: a", "Negative prompt: b", "Sampler: DPM-Solver++ (2M)", "Steps: 20", "Guidance: 3",
                         "Seed: 9"]
    assert "Size: 32×32" in lines and "Batch: image 2 of 4" in lines and "extra: 1" in lines
    assert lines[-1] == f"File: {entry.path}"

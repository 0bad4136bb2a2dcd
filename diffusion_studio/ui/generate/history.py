"""The history of finished images, headless: PNG files with full metadata in one folder.

Each image is one PNG written by `core.png_meta.write_png` (the `parameters` text plus
the JSON chunk), so the folder is the database: listing it, reading metadata back and
deleting are file operations, and any tool can open the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_studio.core import png_meta
from diffusion_studio.core.params import sampler_label
from diffusion_studio.errors import UsageError


@dataclass(frozen=True)
class HistoryEntry:
    path: Path
    metadata: dict[str, Any]
    created: float  # seconds since the epoch (file modification time)

    @property
    def title(self) -> str:
        meta = self.metadata
        if meta.get("class_label") is not None:  # a class-conditional model's image
            label = f"class {meta['class_label']}"
            return f"{meta['class_name']} ({label})" if meta.get("class_name") else label
        if meta.get("conditioning") == "none":
            return "(unconditional)"
        prompt = str(meta.get("prompt", "")).strip() or "(no prompt)"
        return prompt if len(prompt) <= 60 else prompt[:57] + "…"

    @property
    def subtitle(self) -> str:
        parts = []
        if "seed" in self.metadata:
            parts.append(f"seed {self.metadata['seed']}")
        if "steps" in self.metadata:
            parts.append(f"{self.metadata['steps']} steps")
        if "sampler" in self.metadata:
            parts.append(sampler_label(self.metadata["sampler"]))
        if self.metadata.get("strength") is not None:
            parts.append(f"img2img {self.metadata['strength']}")
        return " · ".join(parts)


def batch_key(entry: HistoryEntry) -> str | None:
    """The run an image of a batch came from (its images share it); None for a single image.

    A run writes `created`, `batch_size` and `batch_index` into every image, and image i has
    seed + i: the first seed, the size and the creation time name the batch.
    """
    m = entry.metadata
    try:
        size, index, seed = int(m.get("batch_size", 1)), int(m.get("batch_index", 0)), int(m.get("seed", 0))
    except (TypeError, ValueError):
        return None
    if size <= 1:
        return None
    return f"{m.get('created', '')}|{seed - index}|{size}|{m.get('model_hash', '')}"


def batch_index(entry: HistoryEntry) -> int:
    try:
        return int(entry.metadata.get("batch_index", 0))
    except (TypeError, ValueError):
        return 0


def in_history_order(entries: list[HistoryEntry]) -> list[HistoryEntry]:
    """Newest run first; the images of one batch together, in batch order (stable across restarts:
    it depends on the files' metadata and times, not on the order they were listed in)."""
    groups: dict[str, list[HistoryEntry]] = {}
    for entry in entries:
        groups.setdefault(batch_key(entry) or f"single|{entry.path}", []).append(entry)
    ordered = sorted(groups.values(), key=lambda g: (max(e.created for e in g), min(e.path.name for e in g)),
                     reverse=True)
    return [e for group in ordered for e in sorted(group, key=lambda e: (batch_index(e), e.path.name))]


def read_entry(path: Path) -> HistoryEntry:
    """The history entry of one PNG; UsageError if it is not a readable PNG."""
    metadata = png_meta.read_metadata(path)
    return HistoryEntry(Path(path), dict(metadata), Path(path).stat().st_mtime)


class HistoryStore:
    """PNG files in `folder`, newest first."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"Cannot create the history folder {self.folder} ({exc.strerror}).") from exc

    def entries(self) -> list[HistoryEntry]:
        found: list[HistoryEntry] = []
        for path in self.folder.glob("*.png"):
            try:
                found.append(read_entry(path))
            except (UsageError, OSError):
                continue  # a foreign or half-deleted file is not history
        return in_history_order(found)

    def _new_path(self, seed: int, index: int) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-seed{seed}-{index}"
        path, n = self.folder / f"{base}.png", 1
        while path.exists():
            path, n = self.folder / f"{base}-{n}.png", n + 1
        return path

    def add(self, image: np.ndarray, metadata: dict[str, Any], index: int = 0) -> HistoryEntry:
        """Write one uint8 image [H, W, C] with its metadata (atomically); return its entry."""
        path = self._new_path(int(metadata.get("seed", 0)), index)
        png_meta.write_png(path, image, metadata)
        return read_entry(path)

    def delete(self, entry: HistoryEntry) -> None:
        try:
            entry.path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise UsageError(f"Cannot delete {entry.path} ({exc.strerror}).") from exc

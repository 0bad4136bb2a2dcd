"""`folder:PATH`: the user's own images as a deterministic, resumable stream of batches.

Two layouts (mixable):
  PATH/cat_01.png + PATH/cat_01.txt      a caption file beside each image
  PATH/red_apple/0001.jpg               one subfolder per class; "red_apple" -> "red apple"
A `.txt` beside an image wins over its class folder. Images are png, jpg/jpeg or webp
(case-insensitive); hidden files and folders are ignored. Every image is turned upright
(EXIF), composited over white if it has alpha, converted to RGB, resized so its shorter
side is the model size and center-cropped. Unreadable images are skipped and counted,
never fatal. Small datasets (< 2 GB as uint8 at the model size) are decoded once and
kept in memory; larger ones are decoded per batch.

Batching is a pure function of the step, like the Shapes stream: the global example
position g = step·B + r·b + j (B = b·W for W ranks) walks through epoch-wise
permutations seeded by (seed, epoch), so ranks get disjoint examples and a resumed
run (or a run with another number of ranks) sees exactly the same global batches.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from diffusion_studio.errors import UsageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
IN_MEMORY_LIMIT = 2 * 1024**3  # bytes of uint8 pixels at the model size
_PERM_KEY, _FLIP_KEY = 0xF01D, 0xF11B  # seed-sequence tags of the two random streams


@dataclass(frozen=True)
class FolderItem:
    path: Path
    caption: str


@dataclass
class FolderScan:
    """The usable (image, caption) pairs of a folder and what was left out, by reason."""

    root: Path
    items: list[FolderItem]
    found: int  # image files seen
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    skipped_files: list[str] = field(default_factory=list)  # relative paths (first 20)
    classes: tuple[str, ...] = ()

    def skip(self, path: Path, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.skipped_files) < 20:
            self.skipped_files.append(f"{path.relative_to(self.root).as_posix()} ({reason})")


def caption_from_folder_name(name: str) -> str:
    """Class folder name -> caption: underscores and dashes become spaces ("red_apple" -> "red apple")."""
    return " ".join(re.sub(r"[_\-]+", " ", name).split())


def _read_caption(image: Path) -> str | None:
    """The text of the `.txt` beside an image (lines joined by spaces), or None if there is none."""
    for suffix in (".txt", ".TXT"):
        path = image.with_suffix(suffix)
        if path.is_file():
            text = path.read_text(encoding="utf-8-sig")
            return " ".join(text.split())
    return None


MAX_DEPTH = 32  # folder levels below PATH
MAX_FILES = 1_000_000  # files seen while scanning


def _walk(folder: Path, depth: int = 0, seen: set[tuple[int, int]] | None = None,
          out: list[Path] | None = None) -> list[Path]:
    """Every non-hidden file below `folder`, in a stable (sorted) order.

    Linked folders are followed once each (a link back up, as in /proc/self, is no endless
    loop); more than MAX_DEPTH levels or MAX_FILES files is a UsageError.
    """
    seen = set() if seen is None else seen
    out = [] if out is None else out
    info = folder.stat()
    if (info.st_dev, info.st_ino) in seen:
        return out
    seen.add((info.st_dev, info.st_ino))
    if depth > MAX_DEPTH:
        raise UsageError(f"The dataset folder nests deeper than {MAX_DEPTH} levels at {folder}.")
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            _walk(entry, depth + 1, seen, out)
        elif entry.is_file():
            out.append(entry)
            if len(out) > MAX_FILES:
                raise UsageError(f"The dataset folder holds more than {MAX_FILES:,} files; "
                                 "point folder:PATH at the images only.")
    return out


def scan_folder(root: str | Path) -> FolderScan:
    """Find the images of `root` and their captions; UsageError if the folder cannot be used."""
    root = Path(root).expanduser()
    if not root.exists():
        raise UsageError(f"The dataset folder {root} does not exist.")
    if not root.is_dir():
        raise UsageError(f"The dataset path {root} is not a folder.")
    try:
        files = _walk(root)
    except OSError as exc:
        raise UsageError(f"The dataset folder {root} cannot be read ({exc.strerror or exc}).") from None
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    scan = FolderScan(root=root, items=[], found=len(images))
    if not images:
        raise UsageError(f"The dataset folder {root} holds no png, jpg or webp image.")
    classes: set[str] = set()
    for path in images:
        try:
            text = _read_caption(path)
        except (OSError, UnicodeDecodeError):
            scan.skip(path, "unreadable caption")
            continue
        relative = path.relative_to(root)
        if text is None and len(relative.parts) > 1:
            text = caption_from_folder_name(relative.parts[0])
            classes.add(text)
        if text is None:
            scan.skip(path, "no caption")
            continue
        scan.items.append(FolderItem(path, text))
    scan.classes = tuple(sorted(classes))
    return scan


def _to_rgb(image: Image.Image) -> Image.Image:
    """Upright RGB; transparency is composited over white, 16-bit grey scaled to 8 bits."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v * (1 / 256)).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB")


def load_image(path: Path, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: shorter side resized to `size` (Lanczos), then center-cropped.

    Raises whatever Pillow raises for an unreadable file (the caller counts it).
    """
    with Image.open(path) as image:
        w, h = image.size
        turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientation: 90° turns
        if turned:
            w, h = h, w
        scale = size / min(w, h)
        target = (max(size, round(w * scale)), max(size, round(h * scale)))
        # JPEG: decode at a reduced DCT scale (still >= target) when the file is much larger.
        image.draft("RGB", target[::-1] if turned else target)
        image = _to_rgb(image)
        if image.size != target:
            image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        left, top = (target[0] - size) // 2, (target[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
        return np.asarray(image, dtype=np.uint8).copy()


def _check_header(path: Path) -> None:
    """Cheap validity check for lazily decoded datasets: the header parses and has a size."""
    with Image.open(path) as image:
        if min(image.size) < 1:
            raise OSError("empty image")


class FolderStream:
    """`batch(step) -> (x0 float32 [b, 3, S, S] in [-1, 1], captions)` for rank r of W (b per rank)."""

    def __init__(self, root: str | Path, image_size: int, batch_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, hflip: bool = False,
                 memory_limit: int = IN_MEMORY_LIMIT, workers: int = 4) -> None:
        self.scan = scan = scan_folder(root)
        self.image_size, self.batch_size, self.seed = image_size, batch_size, seed
        self.rank, self.world_size, self.hflip = rank, world_size, hflip
        nbytes = len(scan.items) * image_size * image_size * 3
        self.in_memory = nbytes < memory_limit
        self.images: np.ndarray | None = None
        self._late_failures: set[int] = set()
        self._perms: dict[int, np.ndarray] = {}
        if self.in_memory:  # decode straight into one uint8 array (no second copy at the peak)
            self.images = images = np.empty((len(scan.items), image_size, image_size, 3), np.uint8)

            def check(i: int) -> None:
                images[i] = load_image(scan.items[i].path, image_size)
        else:
            def check(i: int) -> None:
                _check_header(scan.items[i].path)
        with ThreadPoolExecutor(max(1, workers)) as pool:  # Pillow decodes without the GIL
            failed = [i for i, error in enumerate(pool.map(lambda i: _try(check, i), range(len(scan.items))))
                      if error is not None]
        for i in failed:
            scan.skip(scan.items[i].path, "unreadable image")
        keep = sorted(set(range(len(scan.items))) - set(failed))
        if not keep:
            raise UsageError(f"None of the {scan.found} images in {scan.root} could be used "
                             f"({_reasons(scan.skipped)}).")
        if self.images is not None and failed:  # compact in place
            for j, i in enumerate(keep):
                self.images[j] = self.images[i]
            self.images = self.images[: len(keep)]
        scan.items = [scan.items[i] for i in keep]
        self.captions = [item.caption for item in scan.items]

    def __len__(self) -> int:
        return len(self.scan.items)

    @property
    def skipped(self) -> int:
        return sum(self.scan.skipped.values()) + len(self._late_failures)

    def describe(self) -> dict[str, Any]:
        """What the start event reports: counts, skipped files by reason, memory mode."""
        reasons = dict(self.scan.skipped)
        if self._late_failures:
            reasons["unreadable image"] = reasons.get("unreadable image", 0) + len(self._late_failures)
        return {"name": "folder", "path": str(self.scan.root), "images": len(self),
                "found": self.scan.found, "skipped": self.skipped, "skipped_by_reason": reasons,
                "skipped_examples": list(self.scan.skipped_files), "classes": len(self.scan.classes),
                "in_memory": self.in_memory, "hflip": self.hflip}

    # ---- deterministic batching -----------------------------------------------------------

    def _permutation(self, epoch: int) -> np.ndarray:
        """The order of epoch `epoch`: a permutation seeded by (seed, epoch)."""
        perm = self._perms.get(epoch)
        if perm is None:
            if len(self._perms) >= 4:
                self._perms.clear()
            perm = self._perms[epoch] = np.random.default_rng([self.seed, _PERM_KEY, epoch]).permutation(len(self))
        return perm

    def indices(self, step: int) -> np.ndarray:
        """Dataset indices of this rank's share of global batch `step`."""
        n, b = len(self), self.batch_size
        first = (step * self.world_size + self.rank) * b
        positions = np.arange(first, first + b, dtype=np.int64)
        out = np.empty(b, dtype=np.int64)
        for epoch in np.unique(positions // n):
            sel = positions // n == epoch
            out[sel] = self._permutation(int(epoch))[positions[sel] % n]
        return out

    def flips(self, step: int) -> np.ndarray:
        """Which of this rank's examples are mirrored (all False unless hflip)."""
        b = self.batch_size
        if not self.hflip:
            return np.zeros(b, dtype=bool)
        coins = np.random.default_rng([self.seed, _FLIP_KEY, step]).random(b * self.world_size)
        return coins[self.rank * b:(self.rank + 1) * b] < 0.5

    def example(self, index: int) -> tuple[np.ndarray, str]:
        """(uint8 [S, S, 3], caption) of example `index`; when decoding per batch, a file that
        turns out unreadable is counted and replaced by the next readable example."""
        if self.images is not None:
            return self.images[index], self.captions[index]
        for k in range(len(self)):
            i = (index + k) % len(self)
            if i in self._late_failures:
                continue
            try:
                return load_image(self.scan.items[i].path, self.image_size), self.captions[i]
            except Exception:  # noqa: BLE001 - any decoder failure means "unreadable"
                self._late_failures.add(i)
        raise UsageError(f"No image in {self.scan.root} can be decoded any more.")

    def batch(self, step: int) -> tuple[torch.Tensor, list[str]]:
        examples = [self.example(int(i)) for i in self.indices(step)]
        images = np.stack([pixels for pixels, _ in examples])
        flip = self.flips(step)
        images[flip] = images[flip, :, ::-1]
        x = images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0  # uint8 -> [-1, 1]
        return torch.from_numpy(np.ascontiguousarray(x)), [caption for _, caption in examples]


def _try(fn: Any, arg: Any) -> BaseException | None:
    """None if fn(arg) worked, else the exception (corrupt files raise many kinds of errors)."""
    try:
        fn(arg)
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


def _reasons(skipped: dict[str, int]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items())) or "none readable"

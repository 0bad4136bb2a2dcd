"""The img2img start image of the Generate workspace, headless (no Qt): `InitImage`.

An init image is kept as decoded (any size and mode) and fitted to the model only when a run
starts, by `core.images.init_image_array` (the CLI's --init-image loader: center-crop,
Lanczos resize, [-1, 1]). SDEdit (Meng et al. 2022) noises it to t_0 = round(strength·T),
x_t0 = √ᾱ_t0 x_0 + √(1−ᾱ_t0) ε, and runs the reverse process from there.

The image cannot go into the PNG, so the metadata names it: `init_image` (the file's path)
or `init_image_source` (where it came from otherwise: the clipboard, the forward process),
and `init_image_sha256`: SHA-256 of the file's bytes (what `sha256sum` prints), or of its
uint8 pixels (row-major H × W × C) when it did not come from a file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from diffusion_studio.core.files import sha256_file
from diffusion_studio.core.images import init_image_array, to_uint8
from diffusion_studio.core.png_meta import read_image
from diffusion_studio.errors import UsageError

PREVIEW_SIDE = 144  # the shown thumbnail's longest side at most (a 24-megapixel photo is not repainted)
DEFAULT_STRENGTH = 0.6  # the form's strength before the user picks one (the CLI's default is 0.75)
PATH_KEY, SOURCE_KEY, SHA_KEY = "init_image", "init_image_source", "init_image_sha256"


def _pixels_sha256(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def _as_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W] / [H, W, C] as is; float [H, W, C] in [-1, 1] (a model's x_0) -> uint8."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise UsageError(f"An init image must be H × W × C with 1, 3 or 4 channels, got shape {array.shape}.")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)):
        raise UsageError("An init image array must be uint8, or floats in [-1, 1].")
    if array.min() < -1.0 - 1e-3 or array.max() > 1.0 + 1e-3:
        raise UsageError("An init image array of floats must lie in [-1, 1].")
    return to_uint8(np.moveaxis(array, -1, 0))  # u = round((x + 1) · 127.5)


@dataclass(frozen=True, eq=False)
class InitImage:
    """An image to start from, as decoded, with where it came from and its SHA-256."""

    image: Image.Image
    source: str  # shown in the form: the file name, "clipboard", "forward process", …
    sha256: str
    path: Path | None = None  # the file it was read from, if any
    _cache: dict[Any, np.ndarray] = field(default_factory=dict, repr=False)  # thumbnail, fitted arrays

    @classmethod
    def from_file(cls, path: str | Path, expected_sha256: str = "") -> InitImage:
        """Any image file Pillow reads; UsageError with one sentence if it cannot be read, or if
        its SHA-256 is not `expected_sha256` (when given: the file a PNG names has changed)."""
        path = Path(path).absolute()
        sha = sha256_file(path, "init image")
        if expected_sha256 and sha != expected_sha256:
            raise UsageError(f"The init image {path.name} has changed since (its SHA-256 differs): "
                             "open the original again to make this image.")
        return cls(read_image(path, "The init image"), path.name, sha, path)

    @classmethod
    def from_image(cls, image: np.ndarray | Image.Image, source: str = "") -> InitImage:
        """A PIL image, a uint8 array [H, W(, C)] or a float array [H, W, C] in [-1, 1]."""
        if isinstance(image, Image.Image):
            image.load()
            pixels = np.asarray(image)
        else:
            pixels = _as_uint8(image)
            image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        return cls(image.copy(), source.strip() or "image", _pixels_sha256(pixels))

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size

    def model_array(self, size: int, channels: int) -> np.ndarray:
        """float32 [1, C, size, size] in [-1, 1] for the model (UsageError if it cannot take one);
        computed once per model size (a large photo takes a while: the loader thread warms it)."""
        key = ("fitted", size, channels)
        if key not in self._cache:
            array = init_image_array(self.image, size, channels)
            array.setflags(write=False)
            self._cache[key] = array
        return self._cache[key]

    def thumbnail(self) -> np.ndarray:
        """uint8 [H, W, 3 | 4] to show: the image as decoded (not yet fitted to the model), reduced
        to at most PREVIEW_SIDE pixels a side."""
        if "thumbnail" not in self._cache:
            transparent = self.image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in self.image.info
            shown = self.image.convert("RGBA" if transparent else "RGB")
            shown.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
            self._cache["thumbnail"] = np.asarray(shown)
        return self._cache["thumbnail"]

    def metadata(self) -> dict[str, Any]:
        """What the PNG records of this image (see the module docstring)."""
        where = {PATH_KEY: str(self.path)} if self.path is not None else {SOURCE_KEY: self.source}
        return {**where, SHA_KEY: self.sha256}

    def describe(self) -> str:
        w, h = self.size
        return f"{self.source} · {w}×{h}"


def recorded_name(metadata: dict[str, Any]) -> str:
    """How a PNG's metadata names its init image, for notes ("" if it names none)."""
    if metadata.get(PATH_KEY):
        return Path(str(metadata[PATH_KEY])).name
    return str(metadata.get(SOURCE_KEY) or "")


def recorded_sha256(metadata: dict[str, Any]) -> str:
    return str(metadata.get(SHA_KEY) or "")


def recorded_file(metadata: dict[str, Any]) -> Path | None:
    """The init image file a PNG's metadata names, if it still exists (its SHA-256 is checked
    when it is read: `InitImage.from_file(path, recorded_sha256(metadata))`)."""
    path = metadata.get(PATH_KEY)
    if not path or not Path(str(path)).is_file():
        return None
    return Path(str(path))

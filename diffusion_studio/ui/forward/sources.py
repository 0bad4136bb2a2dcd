"""Source images x_0 for the Forward tab, headless: a Shapes example, an image file or an array,
each resized and centre-cropped to a square of the chosen size (uint8 RGB; `gray_rgb` makes the
grey x_0 of a 1-channel model from it).

An `Origin` says where x_0 came from, so the same image can be rebuilt at another size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from diffusion_studio.core import png_meta, shapes
from diffusion_studio.errors import UsageError

SOURCE_SIZES: tuple[int, ...] = (16, 32, 64, 128, 256)
DEFAULT_SIZE = 64


def fit_image(image: Image.Image, size: int) -> np.ndarray:
    """Resize so the shorter side is `size`, centre-crop to size × size; uint8 RGB [H, W, 3]."""
    if size < 8:
        raise UsageError(f"The image size must be at least 8 pixels, got {size}.")
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)  # transparency onto white
    fitted = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.LANCZOS, centering=(0.5, 0.5))
    return np.asarray(fitted, dtype=np.uint8).copy()


def gray_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> its luma (ITU-R 601, as PIL's "L") in all three channels, R = G = B."""
    luma = np.asarray(Image.fromarray(np.ascontiguousarray(image), "RGB").convert("L"), dtype=np.uint8)
    return np.repeat(luma[..., None], 3, axis=2)


def rgb_view(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, C] to show: C = 1 repeated to R = G = B, C = 3 unchanged."""
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def load_image(path: Path | str, size: int) -> np.ndarray:
    """An image file (PNG, JPEG, …) resized and centre-cropped; UsageError with one sentence if unreadable."""
    return fit_image(png_meta.read_image(path), size)


def array_image(image: np.ndarray, size: int) -> np.ndarray:
    """A uint8 [H, W, C] array (C = 1, 3 or 4) as a size × size RGB source."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise UsageError(f"Expected a uint8 image [H, W, C], got {image.dtype} {image.shape}.")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return fit_image(Image.fromarray(np.ascontiguousarray(image)), size)


def shapes_example(seed: int, size: int) -> tuple[np.ndarray, str]:
    """A Shapes example (image, caption) drawn from `seed`."""
    image, caption, _spec = shapes.sample_example(np.random.default_rng(seed), size)
    return image, caption


@dataclass(frozen=True)
class ShapesOrigin:
    seed: int


@dataclass(frozen=True)
class FileOrigin:
    path: Path


@dataclass(frozen=True)
class ArrayOrigin:
    image: np.ndarray = field(compare=False)
    name: str = "Image from the Generate tab"


Origin = ShapesOrigin | FileOrigin | ArrayOrigin


def load_origin(origin: Origin, size: int) -> tuple[np.ndarray, str]:
    """(uint8 RGB [size, size, 3], a name to show) for an origin; UsageError with one sentence."""
    if isinstance(origin, ShapesOrigin):
        image, caption = shapes_example(origin.seed, size)
        return image, f"Shapes: {caption}"
    if isinstance(origin, FileOrigin):
        return load_image(origin.path, size), origin.path.name
    return array_image(origin.image, size), origin.name

"""Conversions between the model's float images and displayable uint8 images, and grids.

Model side: float32 [N, C, H, W] in [-1, 1]. Display side: uint8 [N, H, W, C].
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from diffusion_studio.errors import UsageError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["to_uint8", "from_uint8", "make_grid", "upscale", "init_image_array"]


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float [-1, 1] NCHW (or CHW) -> uint8 NHWC (or HWC): round((x + 1) · 127.5), clipped."""
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise UsageError(f"images must have shape [N, C, H, W] or [C, H, W], got {x.shape}.")
    scaled = np.clip(np.rint((x.astype(np.float64) + 1.0) * 127.5), 0, 255)
    scaled = np.nan_to_num(scaled, nan=0.0)
    return np.ascontiguousarray(np.moveaxis(scaled.astype(np.uint8), -3, -1))


def from_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC (or HWC) -> float32 NCHW (or CHW) in [-1, 1]: x = u / 127.5 − 1."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise UsageError(f"images must be uint8, got {images.dtype}.")
    if images.ndim not in (3, 4):
        raise UsageError(f"images must have shape [N, H, W, C] or [H, W, C], got {images.shape}.")
    x = images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def make_grid(images_uint8: np.ndarray, cols: int | None = None, padding: int = 0, fill: int = 0) -> np.ndarray:
    """Tile uint8 [N, H, W, C] images row by row into one [rows·H, cols·W, C] image.

    `cols` defaults to ceil(√N); `padding` pixels of value `fill` separate the tiles;
    empty cells of the last row are filled with `fill`.
    """
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] < 1:
        raise UsageError(f"make_grid needs a non-empty uint8 [N, H, W, C] array, got {images.dtype} {images.shape}.")
    n, h, w, c = images.shape
    if cols is None:
        cols = math.ceil(math.sqrt(n))
    if isinstance(cols, bool) or not isinstance(cols, (int, np.integer)) or cols < 1:
        raise UsageError(f"cols must be a positive integer, got {cols!r}.")
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise UsageError(f"padding must be a non-negative integer, got {padding!r}.")
    cols = min(int(cols), n)
    rows = math.ceil(n / cols)
    grid = np.full(
        (rows * h + (rows - 1) * padding, cols * w + (cols - 1) * padding, c), fill, dtype=np.uint8
    )
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = r * (h + padding), k * (w + padding)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def upscale(images_uint8: np.ndarray, factor: int) -> np.ndarray:
    """Enlarge uint8 [H, W, C] (or [N, H, W, C]) images by a whole `factor`, nearest neighbour:
    every pixel becomes a factor × factor square (tiny model images stay crisp in files)."""
    images = np.asarray(images_uint8)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise UsageError(f"upscale needs uint8 [H, W, C] or [N, H, W, C] images, got {images.dtype} {images.shape}.")
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise UsageError(f"The scale must be a whole number of at least 1, got {factor!r}.")
    if factor == 1:
        return images
    return np.repeat(np.repeat(images, int(factor), axis=-3), int(factor), axis=-2)


def init_image_array(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """An img2img start image for a model of `size` × `size` × `channels` (the CLI's --init-image
    and the GUI's init image): any size and mode is center-cropped to a square, resized to
    size × size (Lanczos) and converted -> float32 [1, C, H, W] in [-1, 1]."""
    from PIL import Image

    if channels not in (1, 3):
        raise UsageError(f"Init images work with 1- or 3-channel models; this one has {channels} channels.")
    image = image.convert("RGB" if channels == 3 else "L")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.uint8).reshape(size, size, channels)
    return from_uint8(pixels)[None]

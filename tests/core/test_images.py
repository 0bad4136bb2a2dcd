import numpy as np
import pytest

from diffusion_studio.core.images import from_uint8, make_grid, to_uint8, upscale
from diffusion_studio.errors import UsageError


def test_to_uint8_values_and_layout() -> None:
    x = np.zeros((2, 3, 2, 4), np.float32)
    x[0, 0, 0, 0], x[0, 1, 0, 0], x[0, 2, 0, 0] = -1.0, 1.0, 0.0
    x[1, 2, 1, 3] = 0.5
    x[0, 0, 1, 1], x[0, 0, 1, 2], x[0, 0, 1, 3] = 7.0, -9.0, np.nan
    u = to_uint8(x)
    assert u.dtype == np.uint8 and u.shape == (2, 2, 4, 3)
    assert u[0, 0, 0].tolist() == [0, 255, 128]  # round((0 + 1) * 127.5) = 128 (half to even)
    assert u[1, 1, 3, 2] == 191  # (1.5 * 127.5 = 191.25)
    assert u[0, 1, 1, 0] == 255 and u[0, 1, 2, 0] == 0 and u[0, 1, 3, 0] == 0  # clipped, NaN -> 0
    assert to_uint8(x[0]).shape == (2, 4, 3)


def test_round_trip() -> None:
    u = np.arange(256, dtype=np.uint8).reshape(1, 4, 64, 1).repeat(3, axis=3)
    x = from_uint8(u)
    assert x.dtype == np.float32 and x.shape == (1, 3, 4, 64)
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(to_uint8(x), u)
    f = np.random.default_rng(0).uniform(-1, 1, (2, 3, 5, 5)).astype(np.float32)
    assert np.abs(from_uint8(to_uint8(f)) - f).max() <= 0.5 / 127.5 + 1e-6


def test_make_grid_places_tiles_row_by_row() -> None:
    images = np.stack([np.full((2, 3, 3), 10 * (i + 1), np.uint8) for i in range(5)])
    grid = make_grid(images)  # ceil(sqrt(5)) = 3 columns, 2 rows
    assert grid.shape == (4, 9, 3)
    assert grid[0, 0, 0] == 10 and grid[0, 3, 0] == 20 and grid[0, 6, 0] == 30
    assert grid[2, 0, 0] == 40 and grid[2, 3, 0] == 50 and grid[2, 6, 0] == 0  # empty cell
    padded = make_grid(images, cols=2, padding=1, fill=255)
    assert padded.shape == (3 * 2 + 2, 2 * 3 + 1, 3)
    assert padded[0, 3, 0] == 255 and padded[0, 4, 0] == 20 and padded[3, 4, 0] == 40
    assert make_grid(images, cols=10).shape == (2, 15, 3)


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 2), np.uint8), np.zeros((1, 2, 2, 3), np.float32),
                                 np.zeros((0, 2, 2, 3), np.uint8)])
def test_make_grid_bad_input(bad) -> None:
    with pytest.raises(UsageError):
        make_grid(bad)


def test_bad_image_arrays() -> None:
    with pytest.raises(UsageError):
        to_uint8(np.zeros((2, 2)))
    with pytest.raises(UsageError):
        from_uint8(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(UsageError):
        make_grid(np.zeros((2, 2, 2, 3), np.uint8), cols=0)


def test_upscale_makes_every_pixel_a_square() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    big = upscale(image, 3)
    assert big.shape == (6, 6, 3)
    assert (big[:3, :3] == image[0, 0]).all() and (big[3:, 3:] == image[1, 1]).all()
    assert (big[:3, 3:] == image[0, 1]).all() and (big[3:, :3] == image[1, 0]).all()
    assert upscale(np.stack([image, image]), 2).shape == (2, 4, 4, 3)  # a batch keeps N
    assert upscale(image, 1) is image
    for bad_factor in (0, 1.5, True):
        with pytest.raises(UsageError, match="scale"):
            upscale(image, bad_factor)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        upscale(image.astype(np.float32), 2)

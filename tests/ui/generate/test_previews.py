"""Preview frames and their rendering: exact pixel values, grids, side by side."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_studio.core.sampling_loop import Step
from diffusion_studio.ui.generate.previews import (
    EPS_RANGE,
    Frame,
    PreviewMode,
    flatten_rgb,
    frame_from_step,
    grid_columns,
    render,
    tile,
)


def _step(n: int = 1, index: int = 11, count: int = 50, t: int = 731, t_prev: int = 711) -> Step:
    shape = (n, 3, 4, 4)
    x_t = np.full(shape, -1.0, np.float32)  # black
    x0 = np.full(shape, 1.0, np.float32)  # white
    eps = np.full(shape, EPS_RANGE, np.float32)  # +3σ -> white
    eps[:, 0] = -EPS_RANGE  # red channel at -3σ -> 0
    return Step(index=index, count=count, t=t, x_prev=x_t, x0_pred=x0, eps=eps, t_prev=t_prev)


def test_frame_from_step_decodes_each_picture_and_captions_it() -> None:
    frame = frame_from_step(_step())
    assert (frame.t, frame.t_prev) == (731, 711)
    assert frame.x_prev.shape == (1, 4, 4, 3) and frame.x_prev.dtype == np.uint8
    assert (frame.x_prev == 0).all() and (frame.x0_pred == 255).all()
    assert (frame.eps[..., 0] == 0).all() and (frame.eps[..., 1:] == 255).all()


def test_each_picture_is_captioned_with_its_own_timestep() -> None:
    """The sample after a step is at t_prev; x̂₀ and ε̂ were predicted at t (the network's t)."""
    frame = frame_from_step(_step())  # the network saw t = 731; the new sample is at t = 711
    assert frame.caption(PreviewMode.XT) == "x_t at t = 711 · step 12/50"
    assert frame.caption(PreviewMode.X0) == "x̂₀ predicted at t = 731 · step 12/50"
    assert frame.caption(PreviewMode.EPS) == "ε̂ predicted at t = 731 · step 12/50"
    assert frame.caption(PreviewMode.SIDE) == "x_t at t = 711 · x̂₀, ε̂ predicted at t = 731 · step 12/50"
    last = frame_from_step(_step(index=49, count=50, t=20, t_prev=0))  # the final sample x_0
    assert last.caption(PreviewMode.X0) == last.caption(PreviewMode.XT) == "x₀ at t = 0 · step 50/50"
    assert last.caption(PreviewMode.SIDE) == "x₀ at t = 0 · ε̂ predicted at t = 20 · step 50/50"


def test_out_of_range_values_are_clipped_not_wrapped() -> None:
    step = _step()
    step = Step(index=0, count=2, t=1, x_prev=step.x_prev * 7, x0_pred=step.x0_pred * 3, eps=step.eps * 10)
    frame = frame_from_step(step)
    assert (frame.x_prev == 0).all() and (frame.x0_pred == 255).all()


def test_last_frame_shows_the_final_sample_as_x0() -> None:
    frame = frame_from_step(_step(index=49, count=50, t=1, t_prev=0))
    assert (frame.x0_pred == frame.x_prev).all() and (frame.x0_pred == 0).all()


@pytest.mark.parametrize(("n", "cols"), [(1, 1), (2, 2), (4, 2), (5, 3), (9, 3), (16, 4)])
def test_grid_columns_are_near_square(n: int, cols: int) -> None:
    assert grid_columns(n) == cols


def test_tile_places_images_with_transparent_gaps() -> None:
    images = np.stack([np.full((4, 4, 3), 10 * (i + 1), np.uint8) for i in range(4)])
    grid = tile(images, gap=2)
    assert grid.shape == (10, 10, 4)
    assert (grid[:4, :4, :3] == 10).all() and (grid[:4, 6:, :3] == 20).all()
    assert (grid[6:, :4, :3] == 30).all() and (grid[6:, 6:, :3] == 40).all()
    assert (grid[4:6, :, 3] == 0).all() and (grid[:4, :4, 3] == 255).all()


def test_render_modes_pick_the_right_picture() -> None:
    frame = frame_from_step(_step(n=2))
    x0 = render(frame, PreviewMode.X0)
    xt = render(frame, PreviewMode.XT)
    assert x0.shape == xt.shape == (4, 10, 4)  # two tiles side by side, 2 px gap
    assert (x0[:, :4, :3] == 255).all() and (xt[:, :4, :3] == 0).all()
    side = render(frame, PreviewMode.SIDE)
    assert side.shape == (4, 3 * 10 + 2 * 6, 4)
    assert (side[:, 0:4, :3] == 0).all()  # x_t first
    assert (side[:, 16:20, :3] == 255).all()  # then x̂₀
    assert (side[:, 32:36, 0] == 0).all() and (side[:, 32:36, 1] == 255).all()  # then ε̂
    assert (side[:, 10:16, 3] == 0).all()  # transparent gap between panels


def test_flatten_rgb_composites_over_background() -> None:
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (200, 100, 50, 255)
    out = flatten_rgb(rgba, background=(10, 20, 30))
    assert out.tolist() == [[[200, 100, 50], [10, 20, 30]]]


def test_grayscale_frames_render_as_grey_rgba() -> None:
    gray = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    frame = Frame(index=0, count=1, t=1, t_prev=0, x_prev=gray, x0_pred=gray, eps=gray)
    rgba = render(frame, PreviewMode.X0)
    assert (rgba[..., 0] == gray[0, ..., 0]).all() and (rgba[..., 2] == gray[0, ..., 0]).all()

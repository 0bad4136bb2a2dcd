"""Trajectory recording (bounded, last step kept) and GIF / filmstrip export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion_studio.errors import UsageError
from diffusion_studio.ui.generate.previews import Frame, PreviewMode
from diffusion_studio.ui.generate.trajectory import Trajectory, export_trajectory, filmstrip


def _frame(index: int, count: int, size: int = 4) -> Frame:
    value = np.full((1, size, size, 3), index % 256, np.uint8)
    return Frame(index=index, count=count, t=count - index, t_prev=count - index - 1, x_prev=value,
                 x0_pred=255 - value, eps=value)


def test_short_runs_keep_every_step() -> None:
    traj = Trajectory(max_frames=64)
    for i in range(20):
        traj.record(_frame(i, 20))
    assert [f.index for f in traj.frames] == list(range(20))


@pytest.mark.parametrize("count", [5, 100, 1000, 257])
def test_long_runs_are_thinned_but_keep_first_and_last(count: int) -> None:
    traj = Trajectory(max_frames=16)
    for i in range(count):
        traj.record(_frame(i, count))
        assert len(traj) <= 16
        assert traj.frames[-1].index == i  # the latest step is always visible
    indices = [f.index for f in traj.frames]
    assert indices[0] == 0 and indices[-1] == count - 1 and indices == sorted(indices)
    steps = np.diff(indices[:-1])
    assert (steps == traj.stride).all()  # evenly spaced apart from the final step


def test_gif_export_has_one_frame_per_step_in_the_chosen_mode(tmp_path: Path) -> None:
    traj = Trajectory()
    for i in range(6):
        traj.record(_frame(i * 40, 201))
    path = export_trajectory(traj, tmp_path / "run.gif", PreviewMode.X0)
    with Image.open(path) as gif:
        assert gif.n_frames == 6
        assert gif.size == (16, 16)  # 4x4 upscaled x4
        gif.seek(5)
        pixel = gif.convert("RGB").getpixel((5, 5))
    assert abs(pixel[0] - (255 - 200)) <= 4  # x̂₀ of the last frame (GIF palette rounding)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_filmstrip_png_picks_evenly_spaced_steps(tmp_path: Path) -> None:
    traj = Trajectory()
    for i in range(50):
        traj.record(_frame(i, 50))
    strip = filmstrip(traj, PreviewMode.XT, max_frames=5, scale=1, gap=1)
    assert strip.shape == (4, 5 * 4 + 4, 3)
    firsts = [int(strip[0, k * 5, 0]) for k in range(5)]
    assert firsts == [0, 12, 24, 37, 49]  # linspace(0, 49, 5) rounded
    path = export_trajectory(traj, tmp_path / "strip.png", PreviewMode.XT)
    assert Image.open(path).size[1] == 16


def test_export_errors_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no trajectory"):
        export_trajectory(Trajectory(), tmp_path / "a.gif", PreviewMode.X0)
    traj = Trajectory()
    traj.record(_frame(0, 1))
    with pytest.raises(UsageError, match=".gif or .png"):
        export_trajectory(traj, tmp_path / "a.jpg", PreviewMode.X0)
    with pytest.raises(UsageError, match="(?i)cannot write"):
        export_trajectory(traj, tmp_path / "missing" / "a.gif", PreviewMode.X0)
    one = export_trajectory(traj, tmp_path / "one.gif", PreviewMode.X0)  # a one-step run: a still GIF
    assert Image.open(one).size == (16, 16)

"""A latent run's trajectory (issue 16): the slider shows the linear-map previews at once and, once it rests on
a step, that step's full VAE decode (LatentPipeline.decode), made in a worker thread; the frames keep the
step's latents, not decoded images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from diffusion_studio.core.images import to_uint8
from diffusion_studio.inference.latent import LatentPipeline, load_latent
from diffusion_studio.inference.pipeline import GenerationRequest

pytest.importorskip("diffusers")
sys.path.insert(0, str(Path(__file__).parents[2]))
sys.path.insert(0, str(Path(__file__).parents[2] / "inference"))
from latent_models import build_tiny_sd_pipeline  # noqa: E402
from latent_optimum import write_optimum_folder  # noqa: E402


@pytest.fixture(scope="module")
def optimum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("latent-trajectory")
    return write_optimum_folder(build_tiny_sd_pipeline(tmp), tmp / "optimum")


def test_resting_on_a_step_shows_its_full_vae_decode(qtbot, make_window, optimum, isolated_state, monkeypatch):
    import diffusion_studio.inference.latent as latent

    monkeypatch.setattr(latent, "FULL_DECODE_SHARE", 0.0)  # as for a large model: no live decodes, previews only
    window = make_window(optimum)
    ws = window.generateWorkspace
    panel, area = ws.settingsPanel, ws.previewArea
    panel.promptEdit.setPlainText("a red cat")
    panel.stepsSpin.setValue(6)
    panel.seedSpin.setValue(3)
    panel.seedLockButton.setChecked(True)
    with qtbot.waitSignal(ws.runEnded, timeout=60_000):
        qtbot.mouseClick(panel.generateButton, Qt.MouseButton.LeftButton)
    trajectory = area.trajectory()
    assert trajectory is not None and len(trajectory) == 6 and trajectory.decoder is not None
    middle = trajectory[2]
    assert middle.latent is not None and middle.latent.shape == (1, 4, 8, 8)  # latents kept, not decoded images

    settings = ws.state.settings
    pipeline = LatentPipeline(load_latent(optimum, "cpu"))
    steps = list(pipeline.iterate(GenerationRequest(prompt="a red cat", sampler=settings.sampler, steps=6, seed=3,
                                                    guidance=settings.guidance)).steps)
    assert not steps[2].decoded
    expected = to_uint8(np.clip(pipeline.decode(steps[2]), -1.0, 1.0))
    preview = to_uint8(np.clip(steps[2].x0_pred, -1.0, 1.0))
    np.testing.assert_array_equal(middle.x0_pred, preview)  # the slider first shows the linear-map preview
    assert np.abs(expected.astype(int) - preview.astype(int)).max() > 5  # which the decode visibly changes

    slider = area.trajectorySlider
    slider.setValue(2)
    assert area.current_frame() is middle  # at once: the preview
    qtbot.waitUntil(lambda: area.current_frame() is not middle and area.current_frame().index == 2, timeout=10_000)
    shown = area.current_frame()
    assert np.abs(shown.x0_pred.astype(int) - expected.astype(int)).max() <= 1
    assert area.captionLabel.text().endswith("VAE decode")
    assert trajectory[2] is middle and middle.latent is not None  # the trajectory still holds latents only

    slider.setValue(1)  # latest wins: leave step 1 before its decode, rest on step 4
    slider.setValue(4)
    qtbot.waitUntil(lambda: area.current_frame().index == 4 and area.current_frame() is not trajectory[4],
                    timeout=10_000)
    expected4 = to_uint8(np.clip(pipeline.decode(steps[4]), -1.0, 1.0))
    assert np.abs(area.current_frame().x0_pred.astype(int) - expected4.astype(int)).max() <= 1

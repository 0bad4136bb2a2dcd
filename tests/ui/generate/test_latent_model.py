"""The app opens an Optimum-layout Stable Diffusion folder (issue 16) and generates with it: the saved PNG is
the LatentPipeline's image for the same settings, every step shows a linear-map preview of the image's size,
and the Forward tab says why it does not probe a latent model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from diffusion_studio.core import png_meta
from diffusion_studio.inference.latent import LatentPipeline, load_latent
from diffusion_studio.inference.pipeline import GenerationRequest

pytest.importorskip("diffusers")
sys.path.insert(0, str(Path(__file__).parents[2]))
sys.path.insert(0, str(Path(__file__).parents[2] / "inference"))
from latent_models import build_tiny_sd_pipeline  # noqa: E402
from latent_optimum import write_optimum_folder  # noqa: E402

SCREENSHOT = Path(__file__).parents[3] / "docs" / "screenshot-latent-model.png"


@pytest.fixture(scope="module")
def optimum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("latent-ui")
    return write_optimum_folder(build_tiny_sd_pipeline(tmp), tmp / "optimum")


def test_optimum_folder_opens_and_generates_with_previews(qtbot, make_window, optimum, isolated_state):
    window = make_window(optimum)
    model = window.models.current
    assert model is not None and model.is_latent and model.name
    ws = window.generateWorkspace
    panel = ws.settingsPanel
    assert panel.promptEdit.isEnabled() and panel.guidanceSpin.isEnabled()
    frames = []
    ws.state.controller.preview.connect(frames.append)
    panel.promptEdit.setPlainText("a red cat") if hasattr(panel.promptEdit, "setPlainText") else \
        panel.promptEdit.setText("a red cat")
    panel.stepsSpin.setValue(5)
    panel.seedSpin.setValue(21)
    panel.seedLockButton.setChecked(True)
    with qtbot.waitSignal(ws.runEnded, timeout=60_000):
        qtbot.mouseClick(panel.generateButton, Qt.MouseButton.LeftButton)
    [saved] = sorted((isolated_state / "data" / "history").glob("*.png"))
    meta = png_meta.read_metadata(saved)
    assert (meta["prompt"], meta["seed"], meta["steps"], meta["width"]) == ("a red cat", 21, 5, 16)
    expected = LatentPipeline(load_latent(optimum, "cpu")).generate(GenerationRequest(
        prompt="a red cat", sampler=meta["sampler"], steps=5, seed=21, guidance=meta["guidance"])).images[0]
    np.testing.assert_array_equal(np.asarray(Image.open(saved)), expected)
    assert frames and all(f.x0_pred.shape[-3:-1] == (16, 16) for f in frames)
    assert "latent diffusion model" in window.forwardWorkspace.modelViews.problem()[0]
    if os.environ.get("DS_SCREENSHOT"):
        window.resize(1280, 800)
        window.grab().save(str(SCREENSHOT))


def test_a_slow_latent_model_on_the_cpu_says_its_time_per_image(qtbot, make_window, optimum, isolated_state,
                                                               monkeypatch):
    window = make_window(optimum)  # the tiny model: well under 2 s, no note
    assert window.statusBar().currentMessage().endswith("/optimum")
    seen = []

    def estimate(self, request):
        seen.append(request)
        return 42.4

    monkeypatch.setattr(LatentPipeline, "estimate_seconds", estimate)
    assert window.open_model(optimum)
    assert window.statusBar().currentMessage().endswith(" · about 42 s per image on the CPU at its default settings")
    assert seen and seen[-1].steps is None  # the model's defaults

"""The Generate form's Width × Height (issue 16): shown for a latent model (step = its VAE factor, from the
factor to 2048, the model's size by default), the run makes that size, the PNG records it, Reuse restores
it, and a pixel model hides the fields (it makes its own size only)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSpinBox

from diffusion_studio.core import png_meta
from diffusion_studio.inference.latent import LatentPipeline, load_latent
from diffusion_studio.inference.pipeline import GenerationRequest

pytest.importorskip("diffusers")
sys.path.insert(0, str(Path(__file__).parents[2]))
sys.path.insert(0, str(Path(__file__).parents[2] / "inference"))
from latent_models import build_tiny_sd_pipeline  # noqa: E402
from latent_optimum import write_optimum_folder  # noqa: E402


@pytest.fixture(scope="module")
def optimum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("latent-size")
    return write_optimum_folder(build_tiny_sd_pipeline(tmp), tmp / "optimum")


def test_width_and_height_make_record_and_restore_the_size(qtbot, make_window, optimum, tiny_bundle,
                                                           isolated_state):
    from diffusion_studio.inference.bundle_loader import default_bundle_path

    window = make_window(optimum)
    window.show()
    ws = window.generateWorkspace
    panel = ws.settingsPanel
    width, height = window.findChild(QSpinBox, "widthSpin"), window.findChild(QSpinBox, "heightSpin")
    assert width is panel.widthSpin and height is panel.heightSpin
    assert width.isVisible() and height.isVisible() and width.isEnabled()
    # step: the VAE factor 2 times the U-Net's 2^(levels − 1) = 2 (its skip connections): 4 pixels
    assert (width.value(), height.value(), width.singleStep(), width.minimum(), width.maximum()) == (16, 16, 4, 4, 2048)
    panel.promptEdit.setPlainText("a red cat")
    panel.stepsSpin.setValue(3)
    panel.seedSpin.setValue(11)
    panel.seedLockButton.setChecked(True)
    width.setValue(24)
    height.setValue(12)
    assert (ws.state.settings.width, ws.state.settings.height) == (24, 12)
    with qtbot.waitSignal(ws.runEnded, timeout=60_000):
        qtbot.mouseClick(panel.generateButton, Qt.MouseButton.LeftButton)
    [saved] = sorted((isolated_state / "data" / "history").glob("*.png"))
    image = np.asarray(Image.open(saved))
    assert image.shape == (12, 24, 3)
    meta = png_meta.read_metadata(saved)
    assert (meta["width"], meta["height"]) == (24, 12)
    expected = LatentPipeline(load_latent(optimum, "cpu")).generate(GenerationRequest(
        prompt="a red cat", sampler=meta["sampler"], steps=3, seed=11, guidance=meta["guidance"], width=24,
        height=12)).images[0]
    np.testing.assert_array_equal(image, expected)

    width.setValue(32)
    height.setValue(8)
    ws.state.restore(meta)  # Reuse
    assert (width.value(), height.value()) == (24, 12)

    pixel = default_bundle_path() if default_bundle_path().is_dir() else tiny_bundle
    assert window.open_model(pixel)
    assert window.models.current is not None and not window.models.current.is_latent
    assert not width.isVisible() and not height.isVisible() and not panel.sizeRow.isVisible()
    assert window.open_model(optimum)  # back to the latent model: shown again
    assert width.isVisible() and width.value() == 24

"""The Generate workspace with imported diffusers bundles: an unconditional model disables the prompt,
a class model shows the class picker, a 256² grey model generates with previews held to their cost budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from diffusion_studio.core import png_meta
from diffusion_studio.inference.bundle_loader import load_bundle
from diffusion_studio.inference.pipeline import UNCONDITIONAL_NOTE, GenerationRequest, Pipeline
from diffusion_studio.ui.generate.settings_panel import CLASS_HINT, NO_GUIDANCE_NOTE
from diffusion_studio.ui.generate.worker import PREVIEW_BUDGET, PreviewThrottle

pytest.importorskip("diffusers")


def _history_files(root: Path) -> list[Path]:
    return sorted((root / "data" / "history").glob("*.png"))


def _generate(qtbot, window) -> None:
    ws = window.generateWorkspace
    with qtbot.waitSignal(ws.runEnded, timeout=60_000):
        qtbot.mouseClick(ws.settingsPanel.generateButton, Qt.MouseButton.LeftButton)


def _shown(widget, panel) -> bool:
    return widget.isVisibleTo(panel)


def test_unconditional_bundle_disables_prompt_and_guidance_and_generates(
        qtbot, make_window, diffusers_models, isolated_state):
    bundle = diffusers_models.bundle("rgb")
    window = make_window(bundle)
    panel = window.generateWorkspace.settingsPanel
    assert not panel.promptEdit.isEnabled() and not panel.negativePromptEdit.isEnabled()
    assert not panel.guidanceSpin.isEnabled() and panel.guidanceNote.text() == NO_GUIDANCE_NOTE
    assert _shown(panel.promptHint, panel) and panel.promptHint.text() == UNCONDITIONAL_NOTE
    assert not _shown(panel.classCombo, panel) and panel.promptBox.title() == "Prompt"
    panel.stepsSpin.setValue(4)
    panel.seedSpin.setValue(77)
    panel.seedLockButton.setChecked(True)
    _generate(qtbot, window)
    [saved] = _history_files(isolated_state)
    meta = png_meta.read_metadata(saved)
    assert (meta["prompt"], meta["guidance"], meta["seed"], meta["steps"]) == ("", 1.0, 77, 4)
    expected = Pipeline(load_bundle(bundle, device="cpu")).generate(
        GenerationRequest(sampler=meta["sampler"], steps=4, seed=77)).images[0]
    np.testing.assert_array_equal(np.asarray(Image.open(saved)), expected)


def test_class_bundle_shows_the_class_picker_and_reuse_restores_the_class(
        qtbot, make_window, diffusers_models, tiny_bundle, isolated_state):
    window = make_window(diffusers_models.bundle("cls"))
    ws = window.generateWorkspace
    panel = ws.settingsPanel
    combo = panel.classCombo
    assert _shown(combo, panel) and panel.promptBox.title() == "Class"
    assert not _shown(panel.promptEdit, panel) and not _shown(panel.negativePromptEdit, panel)
    assert [combo.itemText(i) for i in range(combo.count())] == ["0 · cat", "1 · dog", "2 · ship", "3 · frog"]
    assert panel.promptHint.text() == CLASS_HINT and not panel.guidanceSpin.isEnabled()
    combo.setCurrentIndex(2)
    assert ws.state.settings.class_label == 2
    panel.stepsSpin.setValue(3)
    _generate(qtbot, window)
    [saved] = _history_files(isolated_state)
    meta = png_meta.read_metadata(saved)
    assert (meta["class_label"], meta["class_name"]) == (2, "ship")

    combo.setCurrentIndex(0)
    ws.state.restore(meta)  # Reuse settings
    assert combo.currentIndex() == 2 and ws.state.settings.class_label == 2

    assert window.open_model(tiny_bundle)  # back to a text model: everything is restored
    for widget in (panel.promptEdit, panel.negativePromptEdit):
        assert _shown(widget, panel) and widget.isEnabled()
    assert panel.guidanceSpin.isEnabled() and panel.guidanceNote.text() == ""
    assert not _shown(combo, panel) and panel.promptBox.title() == "Prompt"
    assert panel.promptHint.text() != CLASS_HINT


def test_grey_256_model_generates_and_previews_stay_within_their_measured_budget(
        qtbot, make_window, diffusers_models, isolated_state):
    window = make_window(diffusers_models.bundle("big"))
    ws = window.generateWorkspace
    panel = ws.settingsPanel
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddim"))
    panel.stepsSpin.setValue(20)
    frames = []
    ws.controller.preview.connect(frames.append)
    _generate(qtbot, window)
    [saved] = _history_files(isolated_state)
    with Image.open(saved) as im:
        assert (im.size, im.mode) == ((256, 256), "L")
    shown = ws.previewArea.previewView.image_array()
    assert shown.shape == (256, 256, 4)  # grey shown as grey: R = G = B
    assert np.array_equal(shown[..., 0], shown[..., 1]) and np.array_equal(shown[..., 1], shown[..., 2])
    np.testing.assert_array_equal(shown[..., 0], np.asarray(Image.open(saved)))
    throttle = ws.state.controller.last_throttle
    assert frames and frames[-1].is_last and throttle.emitted == len(frames)
    # the budget, plus the two previews no budget can hold back: the first (nothing measured) and the final one
    allowance = 2 * throttle.mean_cost_s / throttle.elapsed_s
    assert 0 < throttle.share <= PREVIEW_BUDGET + allowance
    assert len(ws.previewArea.trajectory()) >= 2


def test_throttle_skips_previews_whose_measured_cost_would_exceed_the_budget():
    now = [0.0]
    throttle = PreviewThrottle(max_hz=1000, clock=lambda: now[0], budget=0.1)
    throttle.start()
    shown = []
    for step in range(100):
        now[0] += 0.010  # 10 ms of network per step
        if throttle.should_emit(step == 99):
            shown.append(step)
            now[0] += 0.005  # each preview costs 5 ms to show
            throttle.consumed(0.005)
    throttle.finish()
    # 5 ms per preview at most 10 % of the time: about one preview in six steps, the first and the last always
    assert shown[0] == 0 and shown[-1] == 99
    assert 12 <= len(shown) <= 22 and throttle.skipped_for_cost > 50
    assert throttle.share == pytest.approx(len(shown) * 0.005 / throttle.elapsed_s)
    assert throttle.share <= 0.1 + 2 * 0.005 / throttle.elapsed_s


def test_history_names_the_class_or_says_unconditional(tmp_path):
    from diffusion_studio.ui.generate.history import HistoryEntry
    from diffusion_studio.ui.generate.history_panel import format_details

    base = {"prompt": "", "negative_prompt": "", "guidance": 1.0, "seed": 4, "steps": 3, "sampler": "ddim"}
    cls = HistoryEntry(tmp_path / "a.png", {**base, "conditioning": "class", "class_label": 2, "class_name": "ship"}, 0)
    none = HistoryEntry(tmp_path / "b.png", {**base, "conditioning": "none"}, 0)
    assert (cls.title, none.title) == ("ship (class 2)", "(unconditional)")
    details = format_details(cls).splitlines()
    assert details[:2] == ["Class: 2 · ship", "Conditioning: class"]
    assert not any(line.startswith(("Prompt", "Negative prompt", "Guidance")) for line in details)


@pytest.mark.parametrize("name", ["rgb", "cls"])
def test_forward_probe_asks_models_without_text(diffusers_models, name):
    """The Forward tab's x̂₀/ε̂ probe calls an unconditional model with (x_t, t), a class model with class 0."""
    from diffusion_studio.core.forward import q_sample
    from diffusion_studio.core.prediction import interpret_output
    from diffusion_studio.ui.forward.model_probe import Inputs, predict
    from diffusion_studio.ui.models import load_model

    model = load_model(diffusers_models.bundle(name), "cpu")
    b = model.bundle
    rng = np.random.default_rng(0)
    x_0 = rng.uniform(-1, 1, (b.channels, b.image_size, b.image_size)).astype(np.float32)
    eps = rng.standard_normal(x_0.shape).astype(np.float32)
    [pred] = predict(Inputs(1, model, b.schedule, x_0, eps, ""), [7])
    x_t = q_sample(b.schedule, x_0, 7, eps)
    labels = np.zeros(1, np.int64) if name == "cls" else None
    output = b.denoiser(x_t[None], np.array([7]), class_labels=labels)
    expected = interpret_output(b.schedule, x_t[None], output, 7, b.prediction, b.variance)
    np.testing.assert_allclose(pred.eps_pred, expected.eps[0], atol=1e-5)

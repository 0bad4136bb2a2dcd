"""GenerateState headless (settings, model, a real run on the tiny bundle), and the settings
panel following it (napari's pattern: build the state, wrap it in the view, check the view)."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffusion_studio.core.bundle import MAX_T
from diffusion_studio.ui.generate.history import HistoryStore
from diffusion_studio.ui.generate.settings import Device, GenerationSettings
from diffusion_studio.ui.generate.settings_panel import SettingsPanel
from diffusion_studio.ui.generate.state import GenerateState
from diffusion_studio.ui.models import load_model


@pytest.fixture
def state(tmp_path: Path) -> GenerateState:
    return GenerateState(HistoryStore(tmp_path / "history"))


def test_settings_changes_are_signalled_once(state: GenerateState) -> None:
    seen: list[GenerationSettings] = []
    state.settingsChanged.connect(seen.append)
    state.update(prompt="a red circle", steps=7)
    state.update(steps=7)  # no change, no signal
    state.set_settings(state.settings)
    assert [(s.prompt, s.steps) for s in seen] == [("a red circle", 7)]
    assert state.restore({"prompt": "a cat", "steps": 80}) == []  # no model: steps up to any bundle's T
    assert (state.settings.prompt, state.settings.steps, state.settings.seed_locked) == ("a cat", 80, True)


def test_generate_is_refused_with_a_sentence(state: GenerateState, tiny_bundle: Path) -> None:
    refused: list[tuple[str, str]] = []
    state.refused.connect(lambda title, message: refused.append((title, message)))
    assert not state.generate()
    assert refused == [("No model", "Open a model bundle before generating.")]
    state.set_model(load_model(tiny_bundle, "cpu"))  # T = 50
    state.update(steps=500)
    assert not state.generate() and not state.is_running
    assert refused[-1][0] == "Cannot generate" and "between 1 and 50" in refused[-1][1]


def test_a_run_end_to_end_without_widgets(qtbot, state: GenerateState, tiny_bundle: Path) -> None:
    state.set_model(load_model(tiny_bundle, "cpu"))
    state.update(prompt="a red circle", steps=4, batch=2, seed=11, seed_locked=True)
    running: list[bool] = []
    finished: list[object] = []
    state.runningChanged.connect(running.append)
    state.finished.connect(finished.append)
    with qtbot.waitSignal(state.idle, timeout=20_000):
        assert state.generate()
    assert running == [True, False] and not state.is_running
    (result,) = finished
    assert result.steps == 4 and result.request.seed == 11 and len(result.saved) == 2
    assert sorted(e.metadata["seed"] for e in state.store.entries()) == [11, 12]  # image i: seed + i


def test_the_settings_panel_follows_the_state(qtbot, state: GenerateState, tiny_bundle: Path) -> None:
    panel = SettingsPanel(state)
    qtbot.addWidget(panel)
    assert panel.stepsSpin.maximum() == MAX_T and not panel.generateButton.isEnabled()
    state.update(prompt="a blue square", sampler="ddim", steps=33, guidance=6.5, seed=2**62, batch=3,
                 device=Device.CPU)
    assert panel.promptEdit.toPlainText() == "a blue square" and panel.samplerCombo.currentData() == "ddim"
    assert (panel.stepsSpin.value(), panel.guidanceSpin.value(), panel.batchSpin.value()) == (33, 6.5, 3)
    assert panel.seedSpin.text() == str(2**62) and panel.deviceCombo.currentData() == "cpu"
    panel.stepsSpin.setValue(12)  # an edit goes into the state
    panel.promptEdit.setPlainText("  a green circle ")
    assert (state.settings.steps, state.settings.prompt) == (12, "a green circle")
    assert panel.promptEdit.toPlainText() == "  a green circle "  # the text being typed is left alone
    state.set_model(load_model(tiny_bundle, "cpu"))  # T = 50: the box ends there
    assert panel.stepsSpin.maximum() == 50 and panel.generateButton.isEnabled()
    state.update(steps=80)
    assert panel.stepsSpin.value() == 50 and state.settings.steps == 50  # clamped, and the state follows
    state.set_model(None)
    assert not panel.generateButton.isEnabled() and panel.stepsSpin.maximum() == MAX_T

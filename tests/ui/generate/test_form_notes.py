"""The form says what it changes and what the model understands (issue 11 §2, §3)."""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from diffusion_studio.core.params import BATCH_MAX, GUIDANCE_MAX
from diffusion_studio.ui.models import device_note

SHAPES_WORDS = ("red", "blue", "green", "circle", "square", "triangle", "white", "background", "large", "small")


def _declare(monkeypatch, window, vocabulary: tuple[str, ...] | None) -> None:
    """The loaded bundle declares `vocabulary` (model.json `vocabulary`)."""
    bundle = window.model().bundle
    monkeypatch.setattr(bundle, "spec", dataclasses.replace(bundle.spec, vocabulary=vocabulary))


def _note(window, name: str) -> str:
    label = window.findChild(QLabel, name)
    assert label is not None, name
    return label.text() if label.isVisibleTo(window) else ""


def _type(qtbot, spin, text: str) -> None:
    spin.setFocus()
    spin.selectAll()
    qtbot.keyClicks(spin, text)
    qtbot.keyClick(spin, Qt.Key.Key_Return)


def test_typed_values_beyond_the_range_are_clamped_with_a_note(qtbot, make_window) -> None:
    window = make_window()
    window.show()
    qtbot.waitExposed(window)
    panel = window.generateWorkspace.settingsPanel
    T = window.model().bundle.T
    _type(qtbot, panel.batchSpin, "100000")
    assert panel.batchSpin.value() == BATCH_MAX  # not the "10" a plain QSpinBox leaves
    assert window.generateWorkspace.state.settings.batch == BATCH_MAX
    assert _note(window, "batchNote") == f"At most {BATCH_MAX} images per run: 100000 became {BATCH_MAX}."
    _type(qtbot, panel.batchSpin, "32")
    assert panel.batchSpin.value() == 32 and _note(window, "batchNote") == ""

    _type(qtbot, panel.stepsSpin, "99999")
    assert panel.stepsSpin.value() == T
    assert _note(window, "stepsNote") == f"At most {T} for this model (its T): 99999 became {T}."
    _type(qtbot, panel.stepsSpin, "0")
    assert panel.stepsSpin.value() == 1
    assert _note(window, "stepsNote") == "At least 1: 0 became 1."


def test_guidance_beyond_its_maximum_is_clamped_with_a_note(qtbot, make_window) -> None:
    window = make_window()
    window.show()
    qtbot.waitExposed(window)
    panel = window.generateWorkspace.settingsPanel
    _type(qtbot, panel.guidanceSpin, "150")
    assert panel.guidanceSpin.value() == GUIDANCE_MAX  # not the "15" a plain QDoubleSpinBox leaves
    assert _note(window, "guidanceNote") == f"At most {GUIDANCE_MAX:g}: 150 became {GUIDANCE_MAX:g}."
    _type(qtbot, panel.guidanceSpin, "7.5")
    assert panel.guidanceSpin.value() == 7.5 and _note(window, "guidanceNote") == ""


def test_steps_from_reused_settings_beyond_t_are_said(qtbot, make_window) -> None:
    window = make_window()
    panel = window.generateWorkspace.settingsPanel
    T = window.model().bundle.T
    state = window.generateWorkspace.state
    state.set_settings(dataclasses.replace(state.settings, steps=T + 500))
    assert panel.stepsSpin.value() == T and state.settings.steps == T
    assert _note(window, "stepsNote") == f"At most {T} for this model (its T): {T + 500} became {T}."


def test_ddpm_with_few_steps_gets_a_hint(qtbot, make_window) -> None:
    window = make_window()
    panel = window.generateWorkspace.settingsPanel
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddpm"))
    panel.stepsSpin.setValue(20)
    assert _note(window, "samplerHint") == (
        "DDPM with 20 steps leaves a noisy image: use DDIM or DPM-Solver++, or 100+ steps."
    )
    panel.stepsSpin.setValue(min(100, panel.stepsSpin.maximum()))
    if panel.stepsSpin.value() >= 100:
        assert _note(window, "samplerHint") == ""
    panel.stepsSpin.setValue(20)
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddim"))
    assert _note(window, "samplerHint") == ""


def test_device_box_says_what_really_runs(qtbot, make_window) -> None:
    window = make_window()
    info = window.model().provider_info
    assert _note(window, "deviceNote") == device_note(info)
    assert _note(window, "deviceNote").startswith("Auto → CPU") or info.on_cuda
    fallback = dataclasses.replace(info, requested="auto", active="CPUExecutionProvider",
                                   fallback_reason="CUDA libraries missing")
    assert device_note(fallback) == "Auto → CPU (CUDA libraries missing)"


def test_prompt_hint_names_unknown_words_live(qtbot, make_window, monkeypatch) -> None:
    window = make_window()
    _declare(monkeypatch, window, SHAPES_WORDS)
    panel = window.generateWorkspace.settingsPanel
    panel.promptEdit.setPlainText("")
    assert _note(window, "promptHint") == "An empty prompt makes an unconditional image (no guidance)."
    qtbot.keyClicks(panel.promptEdit, "a pink star")
    assert _note(window, "promptHint") == "This model does not know: pink, star."
    panel.promptEdit.setPlainText("a red circle on a white background")
    assert _note(window, "promptHint") == ""


def test_vocabulary_action_lists_words_and_examples(qtbot, make_window, monkeypatch) -> None:
    window = make_window()
    action = window.findChild(type(window.aboutAction), "vocabularyAction")
    assert action is not None and action.text().replace("&", "") == "What this model knows"
    _declare(monkeypatch, window, SHAPES_WORDS)
    action.trigger()
    dialog = window.vocabularyDialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.words() == sorted(SHAPES_WORDS)
    examples = dialog.examples()
    assert examples and all(set(e.split()) <= set(SHAPES_WORDS) | {"a", "on", "an"} for e in examples)
    dialog.useButton.click()
    assert window.generateWorkspace.state.settings.prompt == examples[0]
    dialog.close()

    _declare(monkeypatch, window, None)
    action.trigger()
    dialog = window.vocabularyDialog
    assert "declares no vocabulary" in dialog.summaryLabel.text()
    assert dialog.words() == [] and not dialog.examplesList.isVisibleTo(dialog)
    dialog.close()

"""MainWindow behaviour: reuse settings, PNG drop, model errors, persistence, dialogs, history actions."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QImage
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from diffusion_studio.core import png_meta
from diffusion_studio.inference.providers import cuda_unusable_reason
from diffusion_studio.ui.generate.previews import PreviewMode
from diffusion_studio.ui.generate.settings import Device


@pytest.fixture
def dialogs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """Record QMessageBox.critical / warning / about calls instead of blocking on them."""
    shown: list[tuple[str, str, str]] = []
    for kind in ("critical", "warning", "about"):
        monkeypatch.setattr(
            QMessageBox, kind,
            staticmethod(lambda parent, title, text, *a, _k=kind, **kw: shown.append((_k, title, text))),
        )
    return shown


def _drop(target, path: Path) -> None:
    """Drag a file over `target` (it must accept it) and drop it there."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    with warnings.catch_warnings():  # Qt 6 only offers the QPoint constructor, marked deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        enter = QDragEnterEvent(QPoint(10, 10), *args)
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(target, QDropEvent(QPointF(10, 10), *args))


OUR_META = {"prompt": "a purple hexagon", "negative_prompt": "blurry", "sampler": "ddim", "steps": 33,
            "guidance": 6.5, "seed": 4242, "model": "tiny", "width": 8, "height": 8}


def test_reuse_settings_fills_the_form_from_a_history_entry(qtbot, make_window, isolated_state) -> None:
    history = isolated_state / "data" / "history"
    history.mkdir(parents=True)
    png_meta.write_png(history / "old.png", np.full((8, 8, 3), 90, np.uint8), OUR_META)
    window = make_window()
    ws = window.generateWorkspace
    panel = ws.settingsPanel
    assert ws.historyPanel.historyList.count() == 1
    ws.historyPanel.historyList.setCurrentRow(0)  # selecting shows the image and its parameters
    assert (ws.previewArea.previewView.image_array()[..., :3] == 90).all()
    assert "Prompt: a purple hexagon" in ws.historyPanel.detailsView.toPlainText()
    assert "Seed: 4242" in ws.historyPanel.detailsView.toPlainText()
    panel.batchSpin.setValue(3)
    qtbot.mouseClick(ws.historyPanel.reuseButton, Qt.MouseButton.LeftButton)
    s = panel.settings()
    assert (s.prompt, s.negative_prompt, s.sampler, s.steps, s.guidance, s.seed) == (
        "a purple hexagon", "blurry", "ddim", 33, 6.5, 4242)
    assert s.seed_locked and s.batch == 3


def test_png_drop_restores_form_from_our_json_and_from_parameters_text(qtbot, make_window, tmp_path, dialogs) -> None:
    window = make_window()
    panel = window.generateWorkspace.settingsPanel
    ours = tmp_path / "ours.png"
    png_meta.write_png(ours, np.zeros((8, 8, 3), np.uint8), OUR_META)
    _drop(window, ours)
    assert (panel.settings().prompt, panel.settings().seed) == ("a purple hexagon", 4242)

    a1111 = tmp_path / "a1111.png"  # only the common `parameters` text chunk, as other tools write it
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a tiny green circle\nNegative prompt: red\n"
                  "Steps: 12, Sampler: DPM++ 2M, CFG scale: 2.5, Seed: 99, Size: 32x32")
    Image.new("RGB", (32, 32)).save(a1111, pnginfo=info)
    _drop(panel.promptEdit.viewport(), a1111)  # onto the prompt field: restores, does not paste a path
    s = panel.settings()
    assert (s.prompt, s.negative_prompt, s.steps, s.sampler, s.guidance, s.seed) == (
        "a tiny green circle", "red", 12, "dpmpp-2m", 2.5, 99)
    assert dialogs == []

    plain = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(plain)
    _drop(window, plain)
    assert dialogs and dialogs[-1][0] == "critical" and "no generation parameters" in dialogs[-1][2]
    assert panel.settings().prompt == "a tiny green circle"  # unchanged


def _a1111_png(path: Path, settings_line: str) -> Path:
    """A PNG as AUTOMATIC1111 writes it: only the `parameters` text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"a red circle\nNegative prompt: blurry\n{settings_line}")
    Image.new("RGB", (64, 64)).save(path, pnginfo=info)
    return path


def test_dropping_a1111_pngs_with_foreign_samplers_and_big_seeds_fills_the_form(
    qtbot, make_window, tmp_path, isolated_state, dialogs
) -> None:
    window = make_window()  # the tiny model has T = 50
    ws = window.generateWorkspace
    panel = ws.settingsPanel
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("dpmpp-2m"))  # the tiny model's default is DDIM
    assert panel.settings().sampler == "dpmpp-2m"
    euler = _a1111_png(tmp_path / "euler.png", "Steps: 30, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, "
                       "Seed: 3000000000, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned, Version: v1.10.1")
    _drop(window, euler)
    s = panel.settings()
    assert (s.prompt, s.negative_prompt, s.sampler, s.steps, s.guidance, s.seed, s.seed_locked) == (
        "a red circle", "blurry", "dpmpp-2m", 30, 7.0, 3_000_000_000, True)
    assert panel.seedSpin.text() == "3000000000"
    message = window.statusBar().currentMessage()
    assert message == "Settings restored from euler.png; sampler 'Euler a' is not available; kept DPM-Solver++ (2M)."

    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddpm"))
    karras = _a1111_png(tmp_path / "karras.png",
                        f"Steps: 150, Sampler: DPM++ 2M Karras, CFG scale: 4.5, Seed: {2**62}, Size: 512x512")
    _drop(panel.promptEdit.viewport(), karras)
    s = panel.settings()
    assert (s.sampler, s.steps, s.guidance, s.seed) == ("dpmpp-2m", 50, 4.5, 2**62)
    assert panel.seedSpin.text() == str(2**62) and panel.stepsSpin.value() == 50
    message = window.statusBar().currentMessage()
    assert "sampler 'DPM++ 2M Karras' runs as DPM-Solver++ (2M)" in message
    assert "150 steps is outside the model's T = 50; using 50" in message
    assert dialogs == []

    panel.stepsSpin.setValue(2)  # the restored 64-bit seed reaches the pipeline and the saved PNG
    with qtbot.waitSignal(ws.runEnded, timeout=20_000):
        ws.generate()
    files = list((isolated_state / "data" / "history").glob("*.png"))
    assert dialogs == [] and len(files) == 1
    assert png_meta.read_metadata(files[0])["seed"] == 2**62


def test_broken_bundle_shows_dialog_and_keeps_the_previous_model(qtbot, make_window, bundle_copy, dialogs) -> None:
    window = make_window()
    before = window.model()
    broken = bundle_copy("broken")
    (broken / "unet.onnx").write_bytes(b"not an onnx file")
    assert window.open_model(broken) is False
    assert len(dialogs) == 1 and dialogs[0][0] == "critical"
    assert "unet.onnx" in dialogs[0][2]
    assert window.model() is before and window.windowTitle().startswith("tiny")
    assert window.generateWorkspace.model() is before
    combo = window.generateWorkspace.settingsPanel.modelCombo
    assert combo.currentData() == str(before.folder)
    missing = bundle_copy("nojson")
    (missing / "model.json").unlink()
    assert window.open_model(missing) is False and "model.json" in dialogs[-1][2]
    assert window.model() is before


def test_opening_another_bundle_switches_model_and_remembers_it(qtbot, make_window, bundle_copy, dialogs) -> None:
    window = make_window()
    other = bundle_copy("other")
    spec = json.loads((other / "model.json").read_text())
    spec["name"] = "other-model"
    (other / "model.json").write_text(json.dumps(spec))
    assert window.open_model(other)
    assert window.model().name == "other-model" and window.windowTitle().startswith("other-model")
    assert "other-model" in window.modelLabel.text()
    combo = window.generateWorkspace.settingsPanel.modelCombo
    assert str(other.resolve()) in [combo.itemData(i) for i in range(combo.count())]
    assert window.app_settings.recent_bundles()[0] == str(other.resolve())
    assert dialogs == []


def test_settings_persist_across_windows(qtbot, make_window) -> None:
    first = make_window()
    panel = first.generateWorkspace.settingsPanel
    panel.promptEdit.setPlainText("a white ring")
    panel.negativePromptEdit.setPlainText("noise")
    panel.stepsSpin.setValue(42)
    panel.guidanceSpin.setValue(7.25)
    panel.seedSpin.setValue(2**62 + 5)  # beyond 32 bits: QSettings keeps it exactly
    panel.seedLockButton.setChecked(True)
    panel.batchSpin.setValue(6)
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddpm"))
    first.generateWorkspace.previewArea.set_mode(PreviewMode.SIDE)
    first.generateWorkspace.previewArea.set_smooth(True)
    expected = panel.settings()
    first.close()

    second = make_window()
    assert second.generateWorkspace.settingsPanel.settings() == expected
    assert second.generateWorkspace.previewArea.mode() is PreviewMode.SIDE
    assert second.generateWorkspace.previewArea.previewView.is_smooth()
    checked = [a.data() for a in second.modeActions.actions() if a.isChecked()]
    assert checked == [PreviewMode.SIDE.value]


def test_missing_default_model_still_opens_with_a_message(
    qtbot, make_window, tiny_bundle, tmp_path, monkeypatch, dialogs
) -> None:
    import diffusion_studio.ui.models as models

    missing = tmp_path / "resources" / "models" / "shapes"
    monkeypatch.setattr(models, "default_model_dir", lambda: missing)
    window = make_window(None)
    ws = window.generateWorkspace
    assert window.model() is None and dialogs == []
    assert "default model is not installed" in ws.previewArea.previewView.placeholder()
    assert "Open model bundle" in ws.previewArea.previewView.placeholder()
    assert not ws.settingsPanel.generateButton.isEnabled() and not window.generateAction.isEnabled()
    assert window.windowTitle().endswith("no model")
    ws.generate()  # e.g. Ctrl+Enter with no model: a dialog, no crash
    assert dialogs[-1][1] == "No model"
    assert window.open_model(tiny_bundle)
    assert ws.settingsPanel.generateButton.isEnabled() and window.generateAction.isEnabled()


@pytest.mark.skipif(cuda_unusable_reason() is None, reason="CUDA works here; the fallback cannot be shown")
def test_cuda_requested_but_unavailable_says_so_and_runs_on_cpu(qtbot, make_window, dialogs) -> None:
    window = make_window()
    panel = window.generateWorkspace.settingsPanel
    panel.set_device(Device.CUDA)
    with pytest.warns(RuntimeWarning, match="CUDA"):  # the engine's own report, never silent
        panel.deviceChanged.emit("cuda")
    assert [d[:2] for d in dialogs] == [("warning", "CUDA unavailable")]
    assert "CUDA is not available" in dialogs[0][2] and "CPU" in dialogs[0][2]
    assert window.model().provider_info.active == "CPUExecutionProvider"
    assert window.deviceLabel.text().startswith("CPU")
    window.close()
    with pytest.warns(RuntimeWarning, match="CUDA"):
        again = make_window()  # CUDA remembered: at start-up the status bar says so, no modal dialog
    assert len(dialogs) == 1 and again.generateWorkspace.settingsPanel.device() is Device.CUDA
    assert "CUDA is not available" in again.statusBar().currentMessage()


def test_nan_output_is_a_dialog_and_saves_nothing(qtbot, make_window, nan_bundle, isolated_state, dialogs) -> None:
    window = make_window(nan_bundle)
    ws = window.generateWorkspace
    ws.settingsPanel.promptEdit.setPlainText("anything")
    ws.settingsPanel.stepsSpin.setValue(3)
    with qtbot.waitSignal(ws.runEnded, timeout=20_000):
        ws.generate()
    assert dialogs and dialogs[-1][:2] == ("critical", "Generation failed") and "NaN" in dialogs[-1][2]
    assert not list((isolated_state / "data" / "history").glob("*.png"))
    assert ws.settingsPanel.generateButton.isEnabled()


def test_the_steps_box_ends_at_the_models_T(qtbot, make_window, long_bundle, tiny_bundle, dialogs) -> None:
    window = make_window(long_bundle)  # T = 1000
    ws = window.generateWorkspace
    panel = ws.settingsPanel
    panel.stepsSpin.setValue(500)
    assert panel.stepsSpin.maximum() == 1000 and ws.state.settings.steps == 500
    assert window.open_model(tiny_bundle)  # T = 50
    panel.stepsSpin.setValue(500)
    assert panel.stepsSpin.maximum() == 50 and ws.state.settings.steps == 50
    ws.state.update(steps=500)  # a value the box cannot show: clamped there, and the state follows
    assert panel.stepsSpin.value() == 50 and ws.state.settings.steps == 50
    assert dialogs == []


def test_history_delete_asks_first_save_as_and_copy(qtbot, make_window, isolated_state, tmp_path, monkeypatch) -> None:
    history = isolated_state / "data" / "history"
    history.mkdir(parents=True)
    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    png_meta.write_png(history / "one.png", image, OUR_META)
    window = make_window()
    panel = window.generateWorkspace.historyPanel
    panel.historyList.setCurrentRow(0)

    target = tmp_path / "exported"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "PNG image (*.png)"))
    qtbot.mouseClick(panel.saveAsButton, Qt.MouseButton.LeftButton)
    assert png_meta.read_metadata(target.with_suffix(".png"))["seed"] == 4242

    qtbot.mouseClick(panel.copyButton, Qt.MouseButton.LeftButton)
    copied = QGuiApplication.clipboard().image().convertToFormat(QImage.Format.Format_RGB888)
    assert np.array_equal(np.array(copied.constBits(), copy=True).reshape(8, 8, 3), image)

    answers = [QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Yes]
    asked: list[str] = []
    monkeypatch.setattr(QMessageBox, "question",
                        staticmethod(lambda p, t, text, *a: (asked.append(text), answers.pop(0))[1]))
    qtbot.mouseClick(panel.deleteButton, Qt.MouseButton.LeftButton)
    assert (history / "one.png").exists() and panel.historyList.count() == 1  # cancelled
    qtbot.mouseClick(panel.deleteButton, Qt.MouseButton.LeftButton)
    assert not (history / "one.png").exists() and panel.historyList.count() == 0
    assert len(asked) == 2 and "purple hexagon" in asked[0]
    assert not panel.deleteButton.isEnabled()


def test_about_box_names_versions(qtbot, make_window, dialogs) -> None:
    window = make_window()
    window.aboutAction.trigger()
    kind, title, text = dialogs[-1]
    assert kind == "about" and "Diffusion Studio" in title and "ONNX Runtime" in text and "CPUExecutionProvider" in text


def test_recent_bundle_that_disappeared_is_dropped_from_the_list(qtbot, make_window, bundle_copy, dialogs) -> None:
    window = make_window()
    gone = bundle_copy("gone")
    assert window.open_model(gone)
    assert str(gone.resolve()) in window.app_settings.recent_bundles()
    shutil.rmtree(gone)
    assert not window.open_model(gone)
    assert "does not exist" in dialogs[-1][2]
    assert str(gone.resolve()) not in window.app_settings.recent_bundles()
    combo = window.generateWorkspace.settingsPanel.modelCombo
    assert str(gone.resolve()) not in [combo.itemData(i) for i in range(combo.count())]
    assert window.model().folder == gone.resolve()  # still the loaded session until another loads


def test_reveal_in_folder_opens_the_history_folder(qtbot, make_window, isolated_state, monkeypatch) -> None:
    import sys

    from PySide6.QtGui import QDesktopServices

    history = isolated_state / "data" / "history"
    history.mkdir(parents=True)
    png_meta.write_png(history / "one.png", np.zeros((8, 8, 3), np.uint8), OUR_META)
    opened: list[str] = []
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: opened.append(url.toLocalFile()) or True))
    window = make_window()
    panel = window.generateWorkspace.historyPanel
    panel.historyList.setCurrentRow(0)
    qtbot.mouseClick(panel.revealButton, Qt.MouseButton.LeftButton)
    assert opened == [str(history)]


def test_any_prompt_text_generates_without_errors(qtbot, make_window, isolated_state, dialogs) -> None:
    window = make_window()
    ws = window.generateWorkspace
    prompt = ("שלום 🌈 a red circle مرحبا " * 400)[:10_000]  # long, emoji, right-to-left
    ws.settingsPanel.promptEdit.setPlainText(prompt)
    ws.settingsPanel.stepsSpin.setValue(2)
    with qtbot.waitSignal(ws.runEnded, timeout=20_000):
        ws.generate()
    assert dialogs == []
    files = list((isolated_state / "data" / "history").glob("*.png"))
    assert len(files) == 1 and png_meta.read_metadata(files[0])["prompt"] == prompt.strip()


def test_default_model_at_start_names_itself_and_its_provider(
    qtbot, make_window, bundle_copy, monkeypatch, dialogs
) -> None:
    """With a bundle at resources/models/shapes, the window opens on it and says which model
    runs on which execution provider (title, status bar, model picker)."""
    import diffusion_studio.ui.models as models

    default = bundle_copy("shapes")
    spec = json.loads((default / "model.json").read_text())
    spec["name"] = "shapes"
    (default / "model.json").write_text(json.dumps(spec))
    monkeypatch.setattr(models, "default_model_dir", lambda: default)
    window = make_window(None)
    model = window.model()
    assert model is not None and model.is_default and dialogs == []
    assert window.windowTitle() == "shapes — Diffusion Studio"
    info = model.provider_info  # CPU here; CUDA where onnxruntime-gpu finds a GPU
    label = f"{info.device_label} · {info.active}"
    if info.fallback_reason:  # Auto with a CUDA build that cannot load CUDA: said so, reason in the tooltip
        label += " (CUDA unavailable)"
        assert info.fallback_reason in window.deviceLabel.toolTip()
    assert window.deviceLabel.text() == label
    assert f"{info.active} (onnxruntime " in window.deviceLabel.toolTip()
    assert window.modelLabel.text() == f"Model: shapes ({model.bundle.model_hash})"
    assert window.generateWorkspace.settingsPanel.modelCombo.currentText() == "shapes (default)"
    assert window.statusBar().currentMessage().startswith("Loaded shapes from ")
    assert window.app_settings.recent_bundles() == []  # the default model is not a "recent" bundle


def test_first_launch_and_model_switch_take_the_models_sampler_defaults(
    qtbot, make_window, tiny_bundle, long_bundle
) -> None:
    from diffusion_studio.core.bundle import read_model_json

    tiny, long = read_model_json(tiny_bundle), read_model_json(long_bundle)
    window = make_window(long_bundle)  # nothing saved yet: the form follows the bundle
    panel = window.generateWorkspace.settingsPanel
    assert (panel.settings().sampler, panel.settings().steps) == ("ddpm", 1000) == (long.sampler.value, long.steps)
    assert panel.settings().guidance == pytest.approx(long.guidance)
    assert window.open_model(tiny_bundle)  # another model: its defaults
    assert (panel.settings().sampler, panel.settings().steps) == (tiny.sampler.value, tiny.steps)
    panel.stepsSpin.setValue(7)
    window.close()
    again = make_window(tiny_bundle)  # saved settings win over the defaults on the next launch
    assert again.generateWorkspace.settingsPanel.settings().steps == 7
    again.modelDefaultsAction.trigger()
    assert again.generateWorkspace.settingsPanel.settings().steps == tiny.steps

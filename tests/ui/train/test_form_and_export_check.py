"""The Train tab without child processes: the preset's real numbers in the form, the stable run
folder that Resume finds across launches, a readable log, and the "samples are still noise" check
before an export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox

from diffusion_studio.ui.train.settings import TrainForm
from diffusion_studio.ui.train.view import LOG_MIN_LINES
from diffusion_studio.ui.train.workspace import SETTINGS_KEY, TrainWorkspace


def _workspace(qtbot, runs: Path) -> TrainWorkspace:
    ws = TrainWorkspace(runs)
    qtbot.addWidget(ws)
    return ws


def test_preset_fields_show_the_presets_numbers(qtbot, tmp_path: Path) -> None:
    ws = _workspace(qtbot, tmp_path / "runs")
    p = ws.panel
    assert ws.form().preset == "cpu-quick" and ws.form().steps is None  # left at the preset
    assert (p.stepsSpin.text(), p.batchSpin.text(), p.imageSizeSpin.text()) == (
        "300 (preset)", "32 (preset)", "32 (preset)")
    assert (p.sampleSpin.text(), p.checkpointSpin.text()) == ("150 (preset)", "100 (preset)")
    p.presetCombo.setCurrentIndex(p.presetCombo.findData("cpu"))
    assert (p.stepsSpin.text(), p.batchSpin.text(), p.sampleSpin.text()) == (
        "6000 (preset)", "64 (preset)", "1000 (preset)")
    p.stepsSpin.setValue(500)  # a typed value is the value
    assert p.stepsSpin.text() == "500" and ws.form().steps == 500


def test_the_run_folder_is_stable_and_resumed_across_launches(qtbot, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = _workspace(qtbot, runs)
    second = _workspace(qtbot, runs)
    assert first.form().out == second.form().out == str(runs / "my-model")
    assert not first.form().resume
    (runs / "my-model" / "checkpoints").mkdir(parents=True)  # a stopped run left a checkpoint
    (runs / "my-model" / "checkpoints" / "step-00000100.safetensors").write_bytes(b"")
    assert _workspace(qtbot, runs).form().resume  # a new launch: Resume finds it
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue(SETTINGS_KEY, json.dumps(TrainForm(out=str(runs / "my-model"), steps=900).to_dict()))
    restored = _workspace(qtbot, runs)
    restored.restore_settings(settings)
    assert restored.form().out == str(runs / "my-model") and restored.form().resume and restored.form().steps == 900
    other = runs / "not-a-run"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    settings.setValue(SETTINGS_KEY, json.dumps(TrainForm(out=str(other)).to_dict()))
    restored.restore_settings(settings)  # a folder with something else in it is not trained into
    assert Path(restored.form().out).parent == runs and restored.form().out != str(other)
    assert not restored.form().resume


def test_the_log_shows_several_lines(qtbot, tmp_path: Path) -> None:
    ws = _workspace(qtbot, tmp_path / "runs")
    log = ws.view.logView
    assert log.minimumHeight() >= log.fontMetrics().lineSpacing() * LOG_MIN_LINES


def _run_with_grid(run: Path, grid: np.ndarray, step: int) -> None:
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / f"step-{step:08d}.safetensors").write_bytes(b"")
    (run / "samples").mkdir()
    Image.fromarray(grid).save(run / "samples" / f"step-{step:08d}.png")


def test_exporting_a_run_whose_samples_are_noise_asks_with_the_grid(qtbot, tmp_path: Path, monkeypatch) -> None:
    runs = tmp_path / "runs"
    noise = np.random.default_rng(0).integers(0, 256, (68, 68, 3), dtype=np.uint8)
    _run_with_grid(runs / "my-model", noise, 20)
    ws = _workspace(qtbot, runs)
    started: list[tuple] = []
    monkeypatch.setattr(ws.state, "start_export", lambda *a, **k: started.append(a) or True)
    answers = [QMessageBox.StandardButton.No.value]
    monkeypatch.setattr(QMessageBox, "exec", lambda box: answers[0])
    assert not ws.start_export() and started == []  # "Keep training"
    box = ws.noise_warning
    assert box is not None and box.objectName() == "noisySamplesBox"
    assert "step 20" in box.text() and "noise" in box.informativeText() and not box.iconPixmap().isNull()
    np.testing.assert_array_equal(ws.view.sampleView.image_array(), noise)  # the grid is shown in the tab too
    assert "still noise" in ws.view.message()
    answers[0] = QMessageBox.StandardButton.Yes.value  # "Export anyway"
    assert ws.start_export() and len(started) == 1


def test_a_run_with_learned_samples_exports_without_asking(qtbot, tmp_path: Path, monkeypatch) -> None:
    runs = tmp_path / "runs"
    smooth = np.zeros((68, 68, 3), np.uint8)
    smooth[10:30, 10:30] = (220, 30, 30)  # a red square on black
    _run_with_grid(runs / "my-model", smooth, 300)
    ws = _workspace(qtbot, runs)
    started: list[tuple] = []
    monkeypatch.setattr(ws.state, "start_export", lambda *a, **k: started.append(a) or True)
    monkeypatch.setattr(QMessageBox, "exec", lambda box: (_ for _ in ()).throw(AssertionError("asked")))
    assert ws.start_export() and len(started) == 1 and ws.noise_warning is None

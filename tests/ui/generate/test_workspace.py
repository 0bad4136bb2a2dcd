"""The Generate workspace end to end on a real (tiny) ONNX bundle: run, preview, history, cancel."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from diffusion_studio.core import png_meta
from diffusion_studio.ui.generate.previews import PreviewMode, render
from diffusion_studio.ui.generate.worker import Progress


def _history_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "data" / "history").glob("*.png"))


def _png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _assert_widget_shows(view, image: np.ndarray) -> None:
    """The grabbed widget has each image pixel's colour at the centre of its on-screen square."""
    grabbed = view.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    rect = view.image_rect()  # after grab(): it lays out a widget that was never shown
    h, w = image.shape[:2]
    cell = rect.width() / w
    assert cell >= 1 and grabbed.width() == view.width()
    for r in range(h):
        for c in range(w):
            x, y = int(rect.left() + (c + 0.5) * cell), int(rect.top() + (r + 0.5) * cell)
            color = grabbed.pixelColor(x, y)
            assert (color.red(), color.green(), color.blue()) == tuple(int(v) for v in image[r, c]), (r, c)


def _run(qtbot, window, click: bool = True) -> None:
    ws = window.generateWorkspace
    with qtbot.waitSignal(ws.runEnded, timeout=20_000):
        if click:
            qtbot.mouseClick(ws.settingsPanel.generateButton, Qt.MouseButton.LeftButton)


def test_prompt_and_generate_previews_saves_history_with_metadata(
    qtbot, make_window, long_bundle, isolated_state, monkeypatch
) -> None:
    import time

    from diffusion_studio.inference.session import OrtDenoiser

    # The tiny U-Net runs 100 steps in a blink; a network of 3 ms per call (the shipped model takes
    # a few) makes the run last long enough to watch on a loaded machine, whatever the first paint costs.
    network = OrtDenoiser.__call__

    def slow_network(self, *args, **kwargs):
        time.sleep(0.003)
        return network(self, *args, **kwargs)

    monkeypatch.setattr(OrtDenoiser, "__call__", slow_network)
    window = make_window(long_bundle)  # T = 1000: 100 steps take long enough to watch
    ws = window.generateWorkspace
    panel = ws.settingsPanel
    qtbot.keyClicks(panel.promptEdit, "a red circle")
    panel.stepsSpin.setValue(100)
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddim"))
    panel.seedSpin.setValue(1234)
    panel.seedLockButton.setChecked(True)
    frames, progress = [], []
    ws.controller.preview.connect(frames.append)
    ws.controller.progress.connect(progress.append)
    assert panel.generateButton.isEnabled() and not panel.cancelButton.isEnabled()
    _run(qtbot, window)

    assert len(frames) >= 3  # the preview really updated during the run
    assert [f.index for f in frames] == sorted({f.index for f in frames})
    assert frames[-1].index == 99 and frames[-1].caption().endswith("step 100/100")
    assert progress[-1].done == progress[-1].count == 100
    files = _history_files(isolated_state)
    assert len(files) == 1
    meta = png_meta.read_metadata(files[0])
    assert (meta["prompt"], meta["seed"], meta["steps"], meta["sampler"]) == ("a red circle", 1234, 100, "ddim")
    assert meta["model"] == "tiny" and meta["provider"] == "CPUExecutionProvider" and meta["onnxruntime"]
    assert meta["guidance"] == pytest.approx(panel.guidanceSpin.value()) and meta["created"]
    saved = _png_pixels(files[0])
    shown = ws.previewArea.previewView.image_array()
    assert np.array_equal(shown[..., :3], saved)  # the final preview is the saved image
    assert np.array_equal(shown, render(frames[-1], PreviewMode.X0))
    _assert_widget_shows(ws.previewArea.previewView, saved)
    assert ws.historyPanel.historyList.count() == 1
    assert panel.generateButton.isEnabled() and not panel.cancelButton.isEnabled()
    assert "steps/s" in window.lastRunLabel.text() and ws.previewArea.progressBar.text().startswith("Done")
    assert window.deviceLabel.text().startswith("CPU")
    assert window.windowTitle().startswith("tiny")


def test_same_locked_seed_gives_the_same_image_and_unlocked_seed_changes(qtbot, make_window, isolated_state) -> None:
    window = make_window()
    panel = window.generateWorkspace.settingsPanel
    panel.promptEdit.setPlainText("a blue square")
    panel.stepsSpin.setValue(5)
    panel.seedSpin.setValue(77)
    panel.seedLockButton.setChecked(True)
    _run(qtbot, window)
    _run(qtbot, window)
    panel.seedLockButton.setChecked(False)
    _run(qtbot, window)
    files = _history_files(isolated_state)
    seeds = sorted(png_meta.read_metadata(f)["seed"] for f in files)
    assert seeds.count(77) == 2 and len(set(seeds)) == 2
    same = [_png_pixels(f) for f in files if png_meta.read_metadata(f)["seed"] == 77]
    assert np.array_equal(same[0], same[1])


def test_ctrl_enter_generates(qtbot, make_window, isolated_state) -> None:
    window = make_window()
    with qtbot.waitActive(window):
        window.show()
        window.activateWindow()
    panel = window.generateWorkspace.settingsPanel
    panel.stepsSpin.setValue(3)
    panel.promptEdit.setFocus()
    qtbot.keyClicks(panel.promptEdit, "a green triangle")
    with qtbot.waitSignal(window.generateWorkspace.runEnded, timeout=20_000):
        qtbot.keyClick(panel.promptEdit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert panel.promptEdit.toPlainText() == "a green triangle"  # no newline typed
    assert len(_history_files(isolated_state)) == 1


def test_batch_shows_a_grid_and_saves_one_png_per_seed(qtbot, make_window, isolated_state) -> None:
    window = make_window()
    ws = window.generateWorkspace
    panel = ws.settingsPanel
    panel.promptEdit.setPlainText("a yellow star")
    panel.stepsSpin.setValue(4)
    panel.batchSpin.setValue(4)
    panel.seedSpin.setValue(500)
    panel.seedLockButton.setChecked(True)
    _run(qtbot, window)
    shown = ws.previewArea.previewView.image_array()
    assert shown.shape == (8 * 2 + 2, 8 * 2 + 2, 4)  # 2x2 grid with 2-pixel transparent gaps
    assert (shown[8:10, :, 3] == 0).all()
    files = _history_files(isolated_state)
    assert sorted(png_meta.read_metadata(f)["seed"] for f in files) == [500, 501, 502, 503]
    for f in files:  # tile i of the grid is image i of the batch (seed 500 + i)
        i = png_meta.read_metadata(f)["seed"] - 500
        r, c = divmod(i, 2)
        tile = shown[r * 10 : r * 10 + 8, c * 10 : c * 10 + 8, :3]
        assert np.array_equal(tile, _png_pixels(f))


def test_cancel_mid_run_stops_fast_and_writes_nothing(qtbot, make_window, long_bundle, isolated_state) -> None:
    window = make_window(long_bundle)
    ws = window.generateWorkspace
    panel = ws.settingsPanel
    panel.promptEdit.setPlainText("a red circle")
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddpm"))
    panel.stepsSpin.setValue(1000)
    seen: list[Progress] = []
    cancelled_at: list[float] = []

    def on_progress(p: Progress) -> None:
        seen.append(p)
        if len(seen) == 5 and not cancelled_at:
            assert panel.cancelButton.isEnabled() and not panel.generateButton.isEnabled()
            cancelled_at.append(time.perf_counter())
            qtbot.mouseClick(panel.cancelButton, Qt.MouseButton.LeftButton)

    ws.controller.progress.connect(on_progress)
    with qtbot.waitSignal(ws.controller.cancelled, timeout=20_000) as blocker:
        qtbot.mouseClick(panel.generateButton, Qt.MouseButton.LeftButton)
    assert blocker.signal_triggered and cancelled_at
    assert time.perf_counter() - cancelled_at[0] < 1.0
    assert seen[-1].done < 1000
    qtbot.waitUntil(lambda: not ws.is_running(), timeout=5000)
    assert _history_files(isolated_state) == []
    assert ws.historyPanel.historyList.count() == 0
    assert panel.generateButton.isEnabled() and not panel.cancelButton.isEnabled()
    assert ws.previewArea.progressBar.text().startswith("Cancelled")
    assert ws.previewArea.trajectory() is None


def test_escape_cancels_and_closing_mid_run_stops_the_worker(qtbot, make_window, long_bundle, isolated_state) -> None:
    window = make_window(long_bundle)
    with qtbot.waitActive(window):
        window.show()
        window.activateWindow()
    ws = window.generateWorkspace
    ws.settingsPanel.promptEdit.setPlainText("a circle")
    ws.settingsPanel.samplerCombo.setCurrentIndex(ws.settingsPanel.samplerCombo.findData("ddpm"))
    ws.settingsPanel.stepsSpin.setValue(1000)
    with qtbot.waitSignal(ws.controller.progress, timeout=10_000):
        ws.generate()
    with qtbot.waitSignal(ws.controller.cancelled, timeout=5_000):
        qtbot.keyClick(window, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not ws.is_running(), timeout=5000)
    with qtbot.waitSignal(ws.controller.progress, timeout=10_000):
        ws.generate()
    assert ws.is_running()
    window.close()  # mid-run: the worker is stopped and joined
    assert not ws.is_running()
    assert _history_files(isolated_state) == []


def test_trajectory_scrubber_and_export(qtbot, make_window, monkeypatch, tmp_path) -> None:
    from PySide6.QtWidgets import QFileDialog

    window = make_window()
    ws = window.generateWorkspace
    area = ws.previewArea
    ws.settingsPanel.promptEdit.setPlainText("a square")
    ws.settingsPanel.stepsSpin.setValue(12)
    assert not area.trajectorySlider.isEnabled()
    _run(qtbot, window)
    assert area.trajectorySlider.isEnabled() and area.trajectorySlider.maximum() == 11
    area.trajectorySlider.setValue(3)
    frame = area.trajectory()[3]
    assert area.captionLabel.text() == f"x̂₀ predicted at t = {frame.t} · step 4/12"
    assert np.array_equal(area.previewView.image_array(), render(frame, PreviewMode.X0))
    area.set_mode(PreviewMode.SIDE)  # re-renders the scrubbed frame in the new mode
    assert np.array_equal(area.previewView.image_array(), render(frame, PreviewMode.SIDE))
    area.set_mode(PreviewMode.XT)  # the noisy sample is one step further: its own timestep
    assert frame.t_prev < frame.t and area.captionLabel.text() == f"x_t at t = {frame.t_prev} · step 4/12"
    target = tmp_path / "run.gif"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "Animated GIF (*.gif)"))
    qtbot.mouseClick(area.exportTrajectoryButton, Qt.MouseButton.LeftButton)
    with Image.open(target) as gif:
        assert gif.n_frames == 12

"""The 2D lab through its objectNames (pytest-qt): dataset, forward slider, training in a worker
thread, sampling with DDPM / DDIM / DPM-Solver++, the sliced Wasserstein label, drawing, cancel."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtWidgets import QComboBox, QLabel, QPushButton, QSlider, QSpinBox

from diffusion_studio.core.sliced_wasserstein import sliced_wasserstein
from diffusion_studio.ui.toy import ToyLabWorkspace

TRAIN_STEPS = 1000


@pytest.fixture
def lab(qtbot) -> ToyLabWorkspace:
    workspace = ToyLabWorkspace()
    qtbot.addWidget(workspace)
    workspace.resize(1400, 900)
    workspace.show()
    yield workspace
    assert workspace.shutdown()


def _find(lab, cls, name):
    widget = lab.findChild(cls, name)
    assert widget is not None, name
    return widget


def _choose(combo: QComboBox, data: str) -> None:
    index = combo.findData(data)
    assert index >= 0, data
    combo.setCurrentIndex(index)


def _plotted(item) -> np.ndarray:
    x, y = item.getData()
    return np.stack([np.asarray(x), np.asarray(y)], axis=1) if x is not None else np.zeros((0, 2))


def test_train_then_sample_with_every_sampler_beats_the_noise(qtbot, lab) -> None:
    start = time.perf_counter()
    _choose(_find(lab, QComboBox, "toyDatasetCombo"), "moons")
    _find(lab, QSpinBox, "toyTrainStepsSpin").setValue(TRAIN_STEPS)
    train = _find(lab, QPushButton, "toyTrainButton")
    qtbot.mouseClick(train, Qt.MouseButton.LeftButton)
    assert lab.state.busy == "train" and not train.isEnabled()
    qtbot.waitUntil(lambda: lab.state.busy == "", timeout=60_000)
    assert lab.state.trained_steps == TRAIN_STEPS
    assert len(lab.state.losses) == TRAIN_STEPS
    raw, smooth = lab.lossRawItem.getData(), lab.lossItem.getData()
    assert len(raw[0]) == TRAIN_STEPS and len(smooth[0]) > 0  # the loss curve is drawn
    # the loss fell: the last hundred steps are well below the first ten
    assert np.mean(lab.state.losses[-100:]) < 0.8 * np.mean(lab.state.losses[:10])
    train_s = time.perf_counter() - start

    sample = _find(lab, QPushButton, "toySampleButton")
    label = _find(lab, QLabel, "toyDistanceLabel")
    for sampler, steps in (("ddpm", 100), ("ddim", 20), ("dpmpp-2m", 20)):
        _choose(_find(lab, QComboBox, "toySamplerCombo"), sampler)
        _find(lab, QSpinBox, "toyStepsSpin").setValue(steps)
        qtbot.mouseClick(sample, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: lab.state.busy == "" and lab.state.samples is not None, timeout=30_000)
        result = lab.state.samples
        assert (result.sampler, result.steps) == (sampler, steps)
        # the plot shows exactly these samples; the label shows the distances
        assert np.allclose(_plotted(lab.toyPlot.sampleItem), result.x_0)
        assert f"{result.sw_samples:.3f}" in label.text() and f"{result.sw_noise:.3f}" in label.text()
        # recomputed independently: samples are much closer to the data than the initial noise
        sw_samples = sliced_wasserstein(result.x_0, lab.state.data, projections=512, seed=7)
        sw_noise = sliced_wasserstein(result.x_T, lab.state.data, projections=512, seed=7)
        assert sw_samples < 0.5 * sw_noise, (sampler, sw_samples, sw_noise)
        paths = lab.toyPlot.pathItem.getData()[0]
        assert len(paths) == result.paths.shape[0] * (steps + 2)  # K lines of steps + 1 points, NaN-separated
    # sliding t shows the reverse chain's x_t nearest to t beside the forward x_t
    result = lab.state.samples
    _find(lab, QSlider, "toyTimestepSlider").setValue(500)
    k = int(np.argmin(np.abs(np.asarray(result.ts) - 500)))
    assert abs(result.ts[k] - 500) < 30 and np.allclose(_plotted(lab.toyPlot.sampleItem), result.frames[k])
    assert "reverse x_t" in lab.toyPlot.sampleItem.opts["name"]
    paths = lab.toyPlot.pathItem.getData()[0]
    assert len(paths) == result.paths.shape[0] * (k + 2)  # the trajectories end where the samples are
    # The time is reported, not asserted (speed is a benchmark figure; the suite runs on shared CPUs).
    print(f"train {train_s:.1f} s, all {time.perf_counter() - start:.1f} s")


def test_the_slider_diffuses_the_plotted_cloud(qtbot, lab) -> None:
    slider = _find(lab, QSlider, "toyTimestepSlider")
    data = lab.state.data
    slider.setValue(0)
    assert np.allclose(_plotted(lab.toyPlot.dataItem), data)
    slider.setValue(300)
    ab = lab.state.schedule.alpha_bar(300)
    shown = _plotted(lab.toyPlot.dataItem)
    assert np.allclose(shown, np.sqrt(ab) * data + np.sqrt(1 - ab) * lab.state.eps, atol=1e-5)  # eq. 4
    slider.setValue(301)  # a small move moves the cloud a little (fixed ε)
    step = np.abs(_plotted(lab.toyPlot.dataItem) - shown).max()
    assert 0 < step < 0.05
    slider.setValue(lab.state.T)  # at T the cloud is (almost) the fixed noise
    assert np.abs(_plotted(lab.toyPlot.dataItem) - lab.state.eps).max() < 0.02
    assert "t = 1000" in _find(lab, QLabel, "toyTimestepLabel").text()


def test_cancel_stops_training_and_keeps_the_model_so_far(qtbot, lab) -> None:
    _find(lab, QSpinBox, "toyTrainStepsSpin").setValue(50_000)
    qtbot.mouseClick(_find(lab, QPushButton, "toyTrainButton"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: lab.state.trained_steps > 0, timeout=20_000)
    stop = _find(lab, QPushButton, "toyStopButton")
    assert stop.isEnabled()
    qtbot.mouseClick(stop, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: lab.state.busy == "", timeout=10_000)
    assert 0 < lab.state.trained_steps < 50_000
    assert lab.state.model is not None and not stop.isEnabled()
    assert _find(lab, QPushButton, "toySampleButton").isEnabled()
    assert "Stopped" in _find(lab, QLabel, "toyStatusLabel").text()


def test_drawing_points_makes_the_dataset(qtbot, lab) -> None:
    _choose(_find(lab, QComboBox, "toyDatasetCombo"), "drawn")
    assert len(lab.state.data) == 0
    qtbot.mouseClick(_find(lab, QPushButton, "toyTrainButton"), Qt.MouseButton.LeftButton)
    assert lab.state.busy == "" and "Draw" in _find(lab, QLabel, "toyStatusLabel").text()
    plot = lab.toyPlot
    vb = plot.viewBox
    for target in ((1.0, 1.0), (-1.5, 0.5)):
        scene = vb.mapViewToScene(QPointF(*target))
        pos = plot.mapFromScene(scene)
        qtbot.mouseClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(pos.x(), pos.y()))
    drawn = lab.state.drawn
    assert drawn.shape == (2, 2)
    assert np.allclose(drawn, [[1.0, 1.0], [-1.5, 0.5]], atol=0.05)  # within a pixel or two
    data = lab.state.data
    assert len(data) > 0
    near = np.min(np.linalg.norm(data[:, None, :] - drawn[None], axis=2), axis=1)
    assert near.max() < 0.3  # every data point is a drawn point plus small jitter
    assert np.allclose(_plotted(plot.drawnItem), drawn)
    _find(lab, QPushButton, "toyClearButton").click()
    assert len(lab.state.drawn) == 0 and len(_plotted(plot.dataItem)) == 0


def test_the_field_arrows_follow_the_score_of_the_model(qtbot, lab) -> None:
    from diffusion_studio.core.toy_mlp import MlpConfig, ToyMlp
    from diffusion_studio.ui.toy.plot import HEAD_FRACTION

    lab.state.model = ToyMlp.create(MlpConfig(hidden=(16,)), lab.state.T, seed=1)  # any ε_θ will do
    lab.state.modelChanged.emit()
    _find(lab, QSlider, "toyTimestepSlider").setValue(200)
    combo = _find(lab, QComboBox, "toyFieldCombo")
    _choose(combo, "score")
    grid, score = lab.state.field("score")
    eps = lab.state.model(grid, np.full(len(grid), 200))
    assert np.allclose(score, -eps / np.sqrt(1 - lab.state.schedule.alpha_bar(200)), rtol=1e-5)  # −ε̂/√(1−ᾱ_t)
    shafts = _plotted(lab.toyPlot.fieldItem).reshape(-1, 2, 2)  # connect='pairs': (start, tip) per arrow
    assert np.allclose(shafts[:, 0], grid, atol=1e-6)
    drawn = shafts[:, 1] - shafts[:, 0]
    cos = np.sum(drawn * score, axis=1) / (np.linalg.norm(drawn, axis=1) * np.linalg.norm(score, axis=1))
    assert np.all(cos > 0.9999)  # each arrow points along the score
    lengths = np.linalg.norm(drawn, axis=1)
    spacing = grid[1, 0] - grid[0, 0]
    assert lengths.max() == pytest.approx(0.9 * spacing, rel=1e-5)  # the longest spans 0.9 of a cell
    heads = _plotted(lab.toyPlot.fieldHeadItem).reshape(-1, 2, 2)
    assert len(heads) == 2 * len(grid)
    assert np.allclose(np.linalg.norm(heads[:, 1] - heads[:, 0], axis=1),
                       np.repeat(lengths, 2) * HEAD_FRACTION, rtol=1e-4)  # two strokes per arrow
    _choose(combo, "eps")  # ε̂ points away from the data: the opposite way
    eps_shafts = _plotted(lab.toyPlot.fieldItem).reshape(-1, 2, 2)
    assert np.all(np.sum((eps_shafts[:, 1] - eps_shafts[:, 0]) * drawn, axis=1) < 0)
    _choose(combo, "off")
    assert len(_plotted(lab.toyPlot.fieldItem)) == 0


def test_stop_cancels_sampling(qtbot, lab) -> None:
    from diffusion_studio.core.toy_mlp import MlpConfig, ToyMlp

    lab.state.model = ToyMlp.create(MlpConfig(), lab.state.T, seed=1)
    lab.state.busyChanged.emit("")  # the Sample button follows the model
    _choose(_find(lab, QComboBox, "toySamplerCombo"), "ddpm")
    _find(lab, QSpinBox, "toyStepsSpin").setValue(1000)
    qtbot.mouseClick(_find(lab, QPushButton, "toySampleButton"), Qt.MouseButton.LeftButton)
    assert lab.state.busy == "sample"
    qtbot.mouseClick(_find(lab, QPushButton, "toyStopButton"), Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: lab.state.busy == "", timeout=10_000)
    assert lab.state.samples is None
    assert _find(lab, QLabel, "toyStatusLabel").text() == "Sampling stopped."


def test_the_lab_is_a_tab_of_the_window_and_closing_stops_training(qtbot) -> None:
    from diffusion_studio.ui import MainWindow

    window = MainWindow(model_path=None)
    qtbot.addWidget(window)
    lab = window.workspace("2D lab")
    assert lab is window.toyLab and lab.objectName() == "toyLab"
    lab.toyTrainStepsSpin.setValue(50_000)
    lab.toyTrainButton.click()
    qtbot.waitUntil(lambda: lab.state.trained_steps > 0, timeout=20_000)
    (thread,) = lab.state.threads()
    assert thread.isRunning()
    window.close()  # closeEvent stops the lab's worker and waits for its thread
    assert not thread.isRunning()

"""Long use through the real MainWindow and the shipped model: no crash, no growth, no thread left.

A leaking Qt binding (PySide6 6.12.0 on CPython 3.11) aborted the interpreter after about
60 default generations, ~120 start/cancel cycles or in the middle of a 1,000-step run.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from diffusion_studio.ui.generate import worker as worker_module

GENERATIONS = 120
CANCEL_CYCLES = 200
LONG_STEPS = 1000
MAX_RSS_GROWTH = 40 * 2**20  # bytes


def _rss_bytes() -> int | None:
    """Resident set size now (Linux), None where /proc is missing."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _native_threads() -> int | None:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


@pytest.mark.slow
def test_soak_generations_cancels_and_a_long_run(qtbot, make_window, isolated_state) -> None:
    window = make_window(None)  # the shipped default model, first launch: its sampler defaults
    ws = window.generateWorkspace
    panel = ws.settingsPanel
    assert ws.model() is not None and ws.model().name == "shapes"
    default_sampler, default_steps = panel.samplerCombo.currentData(), panel.stepsSpin.value()
    panel.promptEdit.setPlainText("a red circle on a blue background")
    finished: list[tuple[int, str | None]] = []  # (steps, save error): a RunResult holds its trajectory
    cancelled: list[int] = []
    errors: list[str] = []
    ws.runFinished.connect(lambda result: finished.append((result.steps, result.save_error)))
    ws.controller.cancelled.connect(lambda: cancelled.append(1))
    ws.errorOccurred.connect(lambda title, text: errors.append(f"{title}: {text}"))

    def generate() -> None:
        with qtbot.waitSignal(ws.runEnded, timeout=120_000):
            qtbot.mouseClick(panel.generateButton, Qt.MouseButton.LeftButton)

    def start_and_cancel() -> None:
        with qtbot.waitSignal(ws.controller.progress, timeout=30_000):  # a step ran: mid-run
            qtbot.mouseClick(panel.generateButton, Qt.MouseButton.LeftButton)
        with qtbot.waitSignal(ws.runEnded, timeout=30_000):
            qtbot.mouseClick(panel.cancelButton, Qt.MouseButton.LeftButton)

    def use_sampler(sampler: str, steps: int) -> None:
        panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData(sampler))
        panel.stepsSpin.setValue(steps)

    # Warm-up: sessions, arenas, caches and the history list's first rows.
    for _ in range(5):
        generate()
    use_sampler("ddpm", LONG_STEPS)
    for _ in range(5):
        start_and_cancel()
    use_sampler(default_sampler, default_steps)
    generate()
    gc.collect()
    rss_before, py_threads_before, native_before = _rss_bytes(), threading.active_count(), _native_threads()
    finished.clear()
    cancelled.clear()
    timings: dict[str, float] = {}

    clock = time.perf_counter()
    for _ in range(GENERATIONS):
        generate()
    timings["generations"] = time.perf_counter() - clock
    assert len(finished) == GENERATIONS and not any(error for _, error in finished)

    use_sampler("ddpm", LONG_STEPS)  # so every cancel lands in the middle of a run
    clock = time.perf_counter()
    for _ in range(CANCEL_CYCLES):
        start_and_cancel()
    timings["cancels"] = time.perf_counter() - clock
    assert len(cancelled) == CANCEL_CYCLES and len(finished) == GENERATIONS

    clock = time.perf_counter()
    generate()  # one full 1,000-step DDPM run
    timings["ddpm-1000"] = time.perf_counter() - clock
    assert len(finished) == GENERATIONS + 1 and finished[-1][0] == LONG_STEPS

    qtbot.waitUntil(lambda: not ws.is_running(), timeout=10_000)
    gc.collect()
    rss_after = _rss_bytes()
    growth = None if rss_before is None or rss_after is None else rss_after - rss_before
    print(f"\nsoak: {timings}; RSS {rss_before} -> {rss_after} bytes (growth {growth})")
    assert not errors
    assert len(list((isolated_state / "data" / "history").glob("*.png"))) == 6 + GENERATIONS + 1
    if growth is not None:
        assert growth < MAX_RSS_GROWTH, f"resident memory grew by {growth / 2**20:.1f} MiB"
    # Nothing left running: no generation QThread (the conftest guard checks every QThread
    # the test started), no orphan, no extra Python or native thread.
    assert not worker_module._ORPHANS
    qtbot.waitUntil(lambda: threading.active_count() <= py_threads_before, timeout=5_000)
    if native_before is not None:
        qtbot.waitUntil(lambda: (_native_threads() or 0) <= native_before, timeout=5_000)


TAB_ROUNDS = 40


@pytest.mark.slow
def test_soak_every_tab_resizes_and_workers(qtbot, make_window, isolated_state) -> None:
    """An hour of a student's use, compressed: every tab, the Forward model views chasing a
    dragged slider, the 2D lab's training started and stopped and sampled, window sizes from
    tiny to huge — through the real MainWindow on the shipped model. No crash, no error
    dialog, no growth, nothing left running."""
    from PySide6.QtWidgets import QComboBox, QPushButton, QSlider, QSpinBox, QWidget

    window = make_window(None)
    window.resize(1280, 860)
    window.show()
    errors: list[str] = []
    window.generateWorkspace.errorOccurred.connect(lambda title, text: errors.append(f"{title}: {text}"))
    tabs = window.tabs
    fw, lab = window.forwardWorkspace, window.toyLab
    slider = fw.findChild(QSlider, "timestepSlider")
    fw.match_model()  # x₀ at the model's 32 × 32, so its views predict instead of showing a note
    assert fw.modelViews.problem() is None
    rng = np.random.default_rng(0)

    def one_round(i: int) -> None:
        tabs.setCurrentWidget(fw)
        fw.detailTabs.setCurrentWidget(fw.findChild(QWidget, "modelPredictionView" if i % 2 else "posteriorView"))
        for t in rng.integers(1, 1000, size=25):  # a drag: faster than the probe can answer
            slider.setValue(int(t))
            qtbot.wait(2)
        if i % 5 == 0:
            qtbot.mouseClick(fw.findChild(QPushButton, "shapesExampleButton"), Qt.MouseButton.LeftButton)
            qtbot.mouseClick(fw.findChild(QPushButton, "newNoiseButton"), Qt.MouseButton.LeftButton)
            assert fw.modelViews.problem() is None
        tabs.setCurrentWidget(lab)
        combo = lab.findChild(QComboBox, "toyDatasetCombo")
        combo.setCurrentIndex(i % combo.count())
        lab.findChild(QSpinBox, "toyTrainStepsSpin").setValue(400)
        qtbot.mouseClick(lab.findChild(QPushButton, "toyTrainButton"), Qt.MouseButton.LeftButton)
        qtbot.wait(int(rng.integers(20, 150)))  # stopped at a random point of its run
        qtbot.mouseClick(lab.findChild(QPushButton, "toyStopButton"), Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: lab.state.busy == "", timeout=30_000)
        if lab.state.trained_steps and i % 4 == 0:
            qtbot.mouseClick(lab.findChild(QPushButton, "toySampleButton"), Qt.MouseButton.LeftButton)
            qtbot.waitUntil(lambda: lab.state.busy == "", timeout=30_000)
        tabs.setCurrentWidget(window.trainWorkspace)
        size = [(1280, 860), (320, 240), (2600, 1500)][i % 3]
        window.resize(*size)
        qtbot.wait(10)
        tabs.setCurrentWidget(window.generateWorkspace)
        qtbot.wait(10)

    for i in range(10):  # warm-up: sessions, plots, arenas (RSS levels off after about ten rounds)
        one_round(i)
    qtbot.waitUntil(lambda: not fw.modelViews.busy(), timeout=30_000)
    gc.collect()
    rss_before, native_before = _rss_bytes(), _native_threads()
    clock = time.perf_counter()
    for i in range(TAB_ROUNDS):
        one_round(i)
    elapsed = time.perf_counter() - clock
    qtbot.waitUntil(lambda: not fw.modelViews.busy() and lab.state.busy == "", timeout=30_000)
    # the Forward views settle on the slider's last value with this model's own prediction
    tabs.setCurrentWidget(fw)
    fw.detailTabs.setCurrentWidget(fw.findChild(QWidget, "modelPredictionView"))
    slider.setValue(321)
    qtbot.waitUntil(lambda: (p := fw.modelViews.last_prediction()) is not None and p.t == 321, timeout=30_000)
    assert 0.0 < fw.modelViews.last_prediction().mse_x0 < 1.0
    gc.collect()
    rss_after = _rss_bytes()
    growth = None if rss_before is None or rss_after is None else rss_after - rss_before
    print(f"\ntab soak: {TAB_ROUNDS} rounds in {elapsed:.1f} s; RSS growth {growth}")
    assert not errors
    if growth is not None:
        assert growth < MAX_RSS_GROWTH, f"resident memory grew by {growth / 2**20:.1f} MiB"
    assert lab.shutdown()
    if native_before is not None:  # (Python lists a QThread that ran Python code as a dummy thread for good)
        qtbot.waitUntil(lambda: (_native_threads() or 0) <= native_before, timeout=5_000)

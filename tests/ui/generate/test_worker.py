"""The generation worker: preview throttling and a responsive GUI thread during a real run."""

from __future__ import annotations

import math
import time

from diffusion_studio.ui.generate.worker import MAX_PREVIEW_HZ, PreviewThrottle, Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_throttle_limits_rate_and_always_delivers_the_last_step() -> None:
    clock = FakeClock()
    throttle = PreviewThrottle(max_hz=30.0, clock=clock)
    emitted = []
    for i in range(300):  # 300 steps in 1 s, the GUI consumes every preview at once
        clock.now = i / 300
        if throttle.should_emit(is_last=(i == 299)):
            emitted.append(i)
            throttle.consumed()
    assert emitted[0] == 0 and emitted[-1] == 299
    assert 28 <= len(emitted) <= 32
    gaps = [b - a for a, b in zip(emitted[:-1], emitted[1:-1], strict=False)]
    assert min(gaps) >= 10  # 1/30 s = 10 steps apart


def test_throttle_coalesces_while_the_gui_has_not_consumed() -> None:
    clock = FakeClock()
    throttle = PreviewThrottle(max_hz=1000.0, clock=clock)
    assert throttle.should_emit(False)
    clock.now = 1.0
    assert not throttle.should_emit(False)  # the previous preview is still queued
    assert throttle.should_emit(True)  # ... but the final step always goes out
    throttle.consumed()
    clock.now = 2.0
    assert throttle.should_emit(False)


def test_progress_rate_and_eta() -> None:
    p = Progress(done=10, count=50, elapsed_s=2.0)
    assert p.steps_per_s == 5.0 and p.eta_s == 8.0
    assert math.isnan(Progress(0, 50, 0.0).eta_s)


def test_real_run_previews_at_most_30_per_second_and_gui_work_per_pass_is_small(
    qtbot, make_window, long_bundle
) -> None:
    from PySide6.QtWidgets import QApplication

    window = make_window(long_bundle)
    ws = window.generateWorkspace
    ws.preview_hz = MAX_PREVIEW_HZ  # the app's real setting
    panel = ws.settingsPanel
    panel.promptEdit.setPlainText("a red circle")
    panel.samplerCombo.setCurrentIndex(panel.samplerCombo.findData("ddpm"))
    panel.stepsSpin.setValue(1000)
    previews: list[int] = []
    ws.controller.preview.connect(lambda frame: previews.append(frame.index))
    QApplication.processEvents()  # the new window's first layout (~60 ms), done before a user clicks Generate
    start = time.perf_counter()
    ws.generate()
    longest_cpu = 0.0
    while ws.is_running() and time.perf_counter() - start < 30:
        t0 = time.thread_time()  # this (GUI) thread's own work, not time the OS gave other threads
        QApplication.processEvents()
        longest_cpu = max(longest_cpu, time.thread_time() - t0)
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    assert not ws.is_running() and previews[-1] == 999
    assert len(previews) <= MAX_PREVIEW_HZ * elapsed + 2
    assert len(previews) >= 3
    assert longest_cpu < 0.05, f"the GUI thread worked {longest_cpu * 1000:.0f} ms in one event-loop pass"

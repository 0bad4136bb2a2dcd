"""Python's cyclic garbage collector, run on the GUI thread only.

CPython collects cycles whenever allocations pass a threshold, in whichever thread is
allocating at that moment. The app's workers (the generation QThread, the 2D lab's
QThreads, the image loader, the step decoder) allocate arrays all the time, so a
collection often runs on a worker. When the garbage holds Qt objects — a closed dialog,
a replaced plot item, a window of an earlier test — their C++ destructors then run off the
GUI thread, possibly while it paints the scene they belong to: a segfault in
`GraphicsView.paintEvent`, minutes or hours into a session.

`GuiThreadCollector` switches automatic collection off and collects from a QTimer on the
GUI thread instead, generation by generation, when `gc.get_count()` passes the thresholds
automatic collection would have used — the same work, at a safe moment.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer

INTERVAL_MS = 200  # a cycle lives at most this long past the moment gc would have taken it


class GuiThreadCollector(QObject):
    """Collects cyclic garbage on the GUI thread every INTERVAL_MS; `stop()` gives gc back."""

    def __init__(self, parent: QObject | None = None, interval_ms: int = INTERVAL_MS) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.collect_due)
        self._was_enabled = gc.isenabled()

    def start(self) -> None:
        app = QCoreApplication.instance()
        if app is None or QThread.currentThread() is not app.thread():
            raise RuntimeError("GuiThreadCollector must be started on the GUI thread of a running QApplication.")
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        if self._was_enabled:
            gc.enable()

    @property
    def active(self) -> bool:
        return self._timer.isActive()

    def collect_due(self) -> int | None:
        """Collect the oldest generation whose count has passed its threshold; None when none has."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        due = [g for g in range(3) if thresholds[g] and counts[g] > thresholds[g]]
        if not due:
            return None
        generation = max(due)
        gc.collect(generation)
        return generation


def install(app: QCoreApplication) -> GuiThreadCollector:
    """One collector per application (a second call returns the first), parented to `app`."""
    existing = app.findChild(GuiThreadCollector)
    if isinstance(existing, GuiThreadCollector):
        return existing
    collector = GuiThreadCollector(app)
    collector.start()
    return collector

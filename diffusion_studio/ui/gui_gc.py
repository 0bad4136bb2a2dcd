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
automatic collection would have used — the same work, at a safe moment. Like CPython's own
collector it takes the oldest generation only once the objects promoted into it since the last
full collection reach a quarter of those that survived it: a full collection scans every
tracked object (tens of milliseconds on this heap), so running it each time generation 2's
count passes its threshold would stall the GUI every few seconds.

`install` also freezes (`gc.freeze()`) what is alive when the app starts — modules, classes,
functions, never garbage — so full collections scan only the objects made since.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer

INTERVAL_MS = 200  # a cycle lives at most this long past the moment gc would have taken it
FULL_COLLECTION_GROWTH = 0.25  # CPython's rule: a full collection once long-lived objects grow by 25 %


class GuiThreadCollector(QObject):
    """Collects cyclic garbage on the GUI thread every INTERVAL_MS; `stop()` gives gc back."""

    def __init__(self, parent: QObject | None = None, interval_ms: int = INTERVAL_MS) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.collect_due)
        self._was_enabled = gc.isenabled()
        self._full_collections = -1  # gc.get_stats()[2]["collections"] when last seen
        self._long_lived_total = 0  # objects in generation 2 after the last full collection
        self._long_lived_pending = 0  # objects promoted into generation 2 since then

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
        """Collect the oldest generation that is due, as CPython's automatic collection would
        choose it; returns that generation, or None when none is due."""
        self._notice_full_collections()
        counts, thresholds = gc.get_count(), gc.get_threshold()
        for generation in (2, 1, 0):
            if not thresholds[generation] or counts[generation] <= thresholds[generation]:
                continue
            if generation == 2 and self._long_lived_pending <= FULL_COLLECTION_GROWTH * self._long_lived_total:
                continue  # not worth a scan of every long-lived object yet
            self._collect(generation)
            return generation
        return None

    def _collect(self, generation: int) -> None:
        if generation == 1:  # its survivors are promoted into generation 2
            young = len(gc.get_objects(0)) + len(gc.get_objects(1))
            self._long_lived_pending += max(0, young - gc.collect(1))
        else:
            gc.collect(generation)
        self._notice_full_collections()

    def _notice_full_collections(self) -> None:
        """Restart the long-lived accounting after any full collection (ours or a gc.collect())."""
        full = gc.get_stats()[2]["collections"]
        if full != self._full_collections:
            self._full_collections = full
            self._long_lived_total = len(gc.get_objects(2))
            self._long_lived_pending = 0


def install(app: QCoreApplication) -> GuiThreadCollector:
    """One collector per application (a second call returns the first), parented to `app`;
    the first call also freezes the objects alive now (they are left out of every collection)."""
    existing = app.findChild(GuiThreadCollector)
    if isinstance(existing, GuiThreadCollector):
        return existing
    gc.collect()  # no garbage goes into the permanent generation
    gc.freeze()
    collector = GuiThreadCollector(app)
    collector.start()
    return collector

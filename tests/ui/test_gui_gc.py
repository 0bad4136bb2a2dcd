"""ui/gui_gc.py: cyclic garbage made while a worker thread allocates is freed on the GUI thread."""

from __future__ import annotations

import gc
import threading

from PySide6.QtCore import QObject

from diffusion_studio.ui import gui_gc


class _Cycle:
    """Half of a reference cycle that records which thread finalised it."""

    def __init__(self, log: list[int]) -> None:
        self.log = log
        self.other: _Cycle | None = None

    def __del__(self) -> None:
        self.log.append(threading.get_ident())


def _drop_a_cycle(log: list[int]) -> None:
    a, b = _Cycle(log), _Cycle(log)
    a.other, b.other = b, a  # only the cyclic collector can free these


def _allocate_on_a_worker() -> None:
    """What a sampling worker does: many container objects, kept until the thread ends."""
    def work() -> None:
        keep = [[i] for i in range(20 * gc.get_threshold()[0])]
        del keep
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def test_with_automatic_gc_a_worker_thread_frees_the_garbage():
    """The hazard itself: gc runs in whichever thread passes the threshold."""
    assert gc.isenabled()
    gc.collect()
    log: list[int] = []
    _drop_a_cycle(log)
    _allocate_on_a_worker()
    gc.collect()  # in case the worker's allocations did not reach a collection of that generation
    assert log and log[0] != threading.get_ident()


def test_the_collector_frees_it_on_the_gui_thread(qtbot, qapp):
    collector = gui_gc.install(qapp)
    assert gui_gc.install(qapp) is collector and qapp.findChildren(gui_gc.GuiThreadCollector) == [collector]
    collector.start()
    assert collector.active and not gc.isenabled()
    gc.collect()
    log: list[int] = []
    for _ in range(3):
        _drop_a_cycle(log)
        _allocate_on_a_worker()
    assert log == []  # nothing was collected on the worker
    qtbot.waitUntil(lambda: len(log) == 6, timeout=5000)
    assert set(log) == {threading.get_ident()}
    assert gc.get_count()[0] <= gc.get_threshold()[0]
    collector.stop()
    assert gc.isenabled() and not collector.active


def test_collect_due_takes_the_oldest_generation_past_its_threshold(qapp):
    collector = gui_gc.GuiThreadCollector(qapp)
    gc.disable()  # as the collector's start() would, without its timer
    try:
        gc.collect()
        assert collector.collect_due() is None
        keep = [[i] for i in range(2 * gc.get_threshold()[0])]
        assert collector.collect_due() == 0
        assert gc.get_count()[0] < gc.get_threshold()[0]
        for _ in range(gc.get_threshold()[1] + 1):  # gen-0 collections counted towards gen 1
            keep += [[i] for i in range(2 * gc.get_threshold()[0])]
            gc.collect(0)
        assert collector.collect_due() == 1
        del keep
    finally:
        gc.enable()
        collector.deleteLater()


def test_start_off_the_gui_thread_is_refused(qapp):
    collector = gui_gc.GuiThreadCollector()
    errors: list[str] = []

    def start() -> None:
        try:
            collector.start()
        except RuntimeError as exc:
            errors.append(str(exc))
    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    assert errors and "GUI thread" in errors[0] and gc.isenabled()
    assert isinstance(collector, QObject)

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


def test_a_full_collection_waits_until_long_lived_objects_grow_by_a_quarter(qapp):
    """CPython's rule, kept: a full collection scans every tracked object, so it runs only once the
    objects promoted into generation 2 since the last one reach 25 % of those that survived it."""
    collector = gui_gc.GuiThreadCollector(qapp)
    gc.disable()
    try:
        survivors = [[i] for i in range(50_000)]  # whatever the heap holds, generation 2 is large
        gc.collect()
        total = len(gc.get_objects(2))
        for _ in range(gc.get_threshold()[2] + 1):
            gc.collect(1)  # generation 2's count passes its threshold, with nothing promoted
        assert gc.get_count()[2] > gc.get_threshold()[2]
        assert collector.collect_due() != 2
        keep: list[list[int]] = []
        chunk = max(2 * gc.get_threshold()[0], total // 100)
        while len(keep) < total:
            keep += [[i] for i in range(chunk)]  # long-lived: promoted by the collector's gen-1 runs
            if collector.collect_due() == 2:
                break
        assert gui_gc.FULL_COLLECTION_GROWTH * total - 2 * chunk <= len(keep) < 0.5 * total + 2 * chunk
        assert gc.get_count()[1:] == (0, 0)  # the full collection ran
        del keep, survivors
    finally:
        gc.enable()
        collector.deleteLater()


def test_install_freezes_the_start_up_objects(qapp):
    """Modules and classes alive when the app started are never scanned again."""
    gui_gc.install(qapp)
    assert gc.get_freeze_count() > 1000
    assert not any(obj is gui_gc.GuiThreadCollector for obj in gc.get_objects())


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

"""The installed Qt binding keeps the reference counts of None, True and False (pure PySide6).

PySide6 6.12.0 on CPython 3.11 drops one reference to None on every void call and one to
True on every Signal.emit() and connect/disconnect; the interpreter then aborts with
"Fatal Python error: bool_dealloc / none_dealloc" after a few minutes of use. The probe
runs in a child interpreter (this file run as a script), so a leaking binding fails this
test with numbers instead of aborting pytest. It imports nothing from the project. On
CPython >= 3.12 the singletons are immortal and the counts never move.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable

TOLERANCE = 50  # references; a leak is one per call, so thousands of calls leave no doubt
BATCH = 10  # calls between checks: a leaking probe stops long before a count reaches zero
WARM_UP = 200  # calls before measuring; the first connects move None's count once (~25, then flat)
FIX = "pip install 'PySide6-Essentials==6.11.3'"


def _counts() -> tuple[int, int, int]:
    return sys.getrefcount(None), sys.getrefcount(True), sys.getrefcount(False)


def _run(call: Callable[[], object], calls: int, tolerance: int = TOLERANCE) -> tuple[int, list[int]]:
    """Up to `calls` calls in batches; stops once a count moved by `tolerance` (long before zero)."""
    gc.collect()  # garbage freed during the loop would release references to None too
    before, done, delta = _counts(), 0, [0, 0, 0]
    while done < calls:
        for _ in range(BATCH):
            call()
        done += BATCH
        delta = [after - start for after, start in zip(_counts(), before, strict=True)]
        if max(map(abs, delta)) >= tolerance:
            break
    return done, delta


def _measure(call: Callable[[], object], calls: int) -> dict[str, int]:
    """The change of each singleton's count over `calls` calls, after a watched warm-up."""
    done, delta = _run(call, WARM_UP, 2 * TOLERANCE)
    if done == WARM_UP:  # the warm-up did not leak already: measure for real
        done, delta = _run(call, calls)
    return {"calls": done, "None": delta[0], "True": delta[1], "False": delta[2]}


def probe() -> dict[str, dict[str, int]]:
    """Void calls, signal emits and connect/disconnect on real widgets; refcount deltas per phase."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QObject, Signal
    from PySide6.QtWidgets import QApplication, QLabel

    class Emitter(QObject):
        flag = Signal(bool)
        plain = Signal()

    def returns_true(value: bool = True) -> bool:
        return value

    def returns_none() -> None:
        return None

    gc.disable()  # only the calls under test change the counts
    app = QApplication.instance() or QApplication([])
    label, emitter = QLabel(), Emitter()
    emitter.flag.connect(returns_true)
    emitter.plain.connect(returns_none)

    def connect_disconnect() -> None:
        emitter.plain.disconnect(emitter.plain.connect(returns_true))

    results = {
        "void QLabel.setText": _measure(lambda: label.setText("x"), 10_000),
        "void QWidget.update": _measure(label.update, 10_000),
        "emit(True) to a bool slot": _measure(lambda: emitter.flag.emit(True), 2_500),
        "emit() to a None slot": _measure(emitter.plain.emit, 2_500),
        "connect/disconnect": _measure(connect_disconnect, 1_000),
    }
    del app
    return results


def test_binding_keeps_refcounts_of_none_true_false() -> None:
    done = subprocess.run([sys.executable, __file__], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the refcount probe crashed the interpreter: {done.stderr[-1500:]}"
    header, results = json.loads(done.stdout.strip().splitlines()[-1])
    leaks = {
        phase: r for phase, r in results.items()
        if max(abs(r["None"]), abs(r["True"]), abs(r["False"])) >= TOLERANCE
    }
    assert not leaks, f"{header} leaks references to singletons ({leaks}); fix: {FIX}"
    assert sum(r["calls"] for r in results.values()) == 26_000  # every phase ran in full


if __name__ == "__main__":
    import PySide6

    outcome = probe()
    print(json.dumps([f"PySide6 {PySide6.__version__} on Python {sys.version.split()[0]}", outcome]), flush=True)
    os._exit(0)  # no finalization: a leaking binding may have drained True/None close to zero

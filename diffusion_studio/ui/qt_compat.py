"""Work-arounds for bugs of the installed Qt binding; imported by every module that paints a lot.

PySide6 6.12.0 on CPython 3.11 returns `None` from every void method (`QPainter.drawLine`,
`QLabel.setText`, `QWidget.update`, …) without taking a reference to it, so each call
drops None's reference count by one. From Python 3.12 on None is immortal and this is
harmless; on 3.11 the count (a few thousand at start-up) reaches zero after a few seconds
of painting and the interpreter aborts with "deallocating None". `keep_none_alive()` gives
None the effectively endless reference count that 3.12 gives it (PEP 683).
"""

from __future__ import annotations

import ctypes
import platform
import sys

NONE_REFCOUNT_FLOOR = 2**40  # ~10^12 leaked references before the count could reach zero


def keep_none_alive() -> None:
    """Raise None's reference count far above anything a leaking binding can consume (CPython < 3.12)."""
    if sys.version_info >= (3, 12) or platform.python_implementation() != "CPython":
        return
    refcount = ctypes.c_ssize_t.from_address(id(None))  # PyObject.ob_refcnt is the first field
    if refcount.value < NONE_REFCOUNT_FLOOR:
        refcount.value += NONE_REFCOUNT_FLOOR


keep_none_alive()

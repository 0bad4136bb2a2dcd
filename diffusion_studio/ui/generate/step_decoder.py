"""Full VAE decodes of a latent run's trajectory steps, off the GUI thread, latest wins.

The trajectory slider shows the linear-map previews at once; when the user stops on a step, the
preview area asks for that step's full decode x̂₀ = D(ẑ₀ / scaling_factor) (`Trajectory.decode`).
One decode runs at a time in a worker thread; requests made while it runs replace each other, so
only the latest is decoded next, and a result whose token is no longer the latest is dropped.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from PySide6.QtCore import QObject, Signal

from diffusion_studio.ui.generate.previews import Frame
from diffusion_studio.ui.generate.trajectory import Trajectory

log = logging.getLogger(__name__)


class StepDecoder(QObject):
    """Decodes one frame at a time in a worker thread; `decoded(token, frame)` arrives on the GUI thread."""

    decoded = Signal(int, object)  # the request's token, the decoded Frame

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="step-decode")
        self._lock = threading.Lock()
        self._busy = False
        self._pending: tuple[int, Trajectory, Frame] | None = None
        self.latest = 0  # the token of the newest request; older results are stale

    def request(self, trajectory: Trajectory, frame: Frame) -> int:
        """Decode `frame` (latest wins); returns its token."""
        self.latest += 1
        job = (self.latest, trajectory, frame)
        with self._lock:
            if self._busy:
                self._pending = job  # replaces any older waiting request
                return self.latest
            self._busy = True
        self._executor.submit(self._run, job)
        return self.latest

    def invalidate(self) -> None:
        """Drop every request made so far (a new run, another model, a history image)."""
        self.latest += 1
        with self._lock:
            self._pending = None

    def _run(self, job: tuple[int, Trajectory, Frame]) -> None:
        while job is not None:
            token, trajectory, frame = job
            try:
                self.decoded.emit(token, trajectory.decode(frame))  # queued to the GUI thread
            except Exception:  # noqa: BLE001 - the preview stays; a decode failure is only logged
                log.exception("Decoding trajectory step %d failed", frame.index)
            with self._lock:
                job, self._pending = self._pending, None  # type: ignore[assignment]
                if job is None:
                    self._busy = False

    def shutdown(self) -> None:
        self.invalidate()
        self._executor.shutdown(wait=False, cancel_futures=True)

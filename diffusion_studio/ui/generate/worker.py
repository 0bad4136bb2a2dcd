"""Generation off the GUI thread: a QObject worker in a QThread (superqt's generator worker).

The GUI thread calls `Pipeline.iterate` (the request is resolved and checked there, once)
and hands the `SamplingRun` to the worker, which drives its steps with
`core.sampling_loop.run_to_end` (the one run-to-the-end, with its NaN check). Cancel sets a
flag checked before every network call, and `Pipeline.cancel()` terminates the call in
flight (`RunOptions.terminate`), so it takes effect within one network call. Previews are
coalesced: at most `max_preview_hz` per second, and never while the GUI thread has not
yet taken the previous one; the final step is always delivered. The GUI thread turns
the numpy frames into QImages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from diffusion_studio.core.sampling_loop import Step, run_to_end
from diffusion_studio.errors import Cancelled, ModelOutputError, UsageError
from diffusion_studio.ui.generate.previews import Frame, frame_from_step
from diffusion_studio.ui.generate.trajectory import Trajectory

if TYPE_CHECKING:
    from diffusion_studio.inference.pipeline import Pipeline, SamplingRun

log = logging.getLogger(__name__)

MAX_PREVIEW_HZ = 30.0
PROGRESS_INTERVAL_S = 1 / 60  # progress-bar updates: at most 60 per second, plus the last step
_ORPHANS: list[tuple[QThread, QObject | None]] = []  # threads that outlived their window


class PreviewThrottle:
    """Decides which steps become previews: rate-limited and coalesced (headless).

    `max_hz <= 0` turns live previews off (the final image still arrives with `finished`).
    """

    def __init__(self, max_hz: float = MAX_PREVIEW_HZ, clock: Callable[[], float] = time.perf_counter):
        self.enabled = max_hz > 0
        self.min_interval = 1.0 / max_hz if max_hz > 0 else float("inf")
        self._clock = clock
        self._last = -float("inf")
        self._in_flight = threading.Event()  # set while the GUI has not consumed a preview

    def should_emit(self, is_last: bool) -> bool:
        if not self.enabled:
            return False
        now = self._clock()
        if not is_last and (self._in_flight.is_set() or now - self._last < self.min_interval):
            return False
        self._last = now
        self._in_flight.set()
        return True

    def consumed(self) -> None:
        """Called from the GUI thread once a preview has been drawn."""
        self._in_flight.clear()


@dataclass(frozen=True)
class Progress:
    done: int  # steps finished
    count: int  # steps in the run
    elapsed_s: float

    @property
    def steps_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float:
        rate = self.steps_per_s
        return (self.count - self.done) / rate if rate > 0 else float("nan")


@dataclass
class RunResult:
    """What a finished run hands to the GUI thread."""

    x_0: np.ndarray  # float32 [N, C, H, W] in [-1, 1]: the final sample
    trajectory: Trajectory
    elapsed_s: float
    steps: int
    request: Any = None  # the resolved GenerationRequest (seed filled in), from `Pipeline.iterate`
    notes: list[str] = field(default_factory=list)  # the run's notes (e.g. prompt truncation)
    saved: list[Any] = field(default_factory=list)  # what `finish` returned (history entries)
    save_error: str | None = None  # why `finish` failed (the image exists, it was not saved)

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.elapsed_s if self.elapsed_s > 0 else 0.0


class GenerationWorker(QObject):
    """Runs the steps of a `SamplingRun` (from `Pipeline.iterate`) to the end; lives in its own QThread."""

    started = Signal()
    preview = Signal(object)  # Frame
    progress = Signal(object)  # Progress
    finished = Signal(object)  # RunResult
    cancelled = Signal()
    failed = Signal(str)  # one sentence for a dialog

    def __init__(
        self,
        pipeline: Pipeline,
        sampling: SamplingRun,
        max_preview_hz: float = MAX_PREVIEW_HZ,
        finish: Callable[[RunResult], list[Any]] | None = None,
    ) -> None:
        """`finish` runs in this thread after a successful run (it writes the files, so the
        GUI thread never waits on disk); a cancelled or failed run never reaches it."""
        super().__init__()
        self._pipeline = pipeline
        self._sampling = sampling
        self._finish = finish
        self._cancel = threading.Event()
        self.throttle = PreviewThrottle(max_preview_hz)

    def cancel(self) -> None:
        """Thread-safe: stop before the next step and terminate the call in flight."""
        self._cancel.set()
        try:
            self._pipeline.cancel()  # the run's steps check the pipeline's stop flag before each call
        except Exception:  # cancelling must never raise into the GUI
            log.exception("Pipeline.cancel() failed")

    @Slot()
    def run(self) -> None:
        self.started.emit()
        trajectory = Trajectory()
        start = time.perf_counter()
        last_progress = -float("inf")

        def on_step(step: Step) -> None:
            nonlocal last_progress
            if self._cancel.is_set():
                raise Cancelled()
            frame = frame_from_step(step)
            trajectory.record(frame)
            is_last = step.index == step.count - 1
            now = time.perf_counter()
            if is_last or now - last_progress >= PROGRESS_INTERVAL_S:
                last_progress = now
                self.progress.emit(Progress(step.index + 1, step.count, now - start))
            if self.throttle.should_emit(is_last):
                self.preview.emit(frame)

        try:
            last = run_to_end(self._sampling.steps, on_step)
            if self._cancel.is_set():
                raise Cancelled()
        except Cancelled:
            self.cancelled.emit()
            return
        except ModelOutputError as exc:
            self.failed.emit(f"{exc} Try another seed, a lower guidance or the CPU device.")
            return
        except UsageError as exc:
            self.failed.emit(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - shown as a dialog, logged with traceback
            if self._cancel.is_set():  # a terminated ONNX Runtime call raises its own error
                self.cancelled.emit()
                return
            log.exception("Generation failed")
            self.failed.emit(f"Generation failed: {exc}")
            return
        elapsed = time.perf_counter() - start
        x_0 = np.asarray(last.x_prev, np.float32)
        sampling = self._sampling
        result = RunResult(x_0, trajectory, elapsed, int(last.count), sampling.request, list(sampling.notes))
        if self._finish is not None:
            try:
                result.saved = list(self._finish(result))
            except UsageError as exc:
                result.save_error = str(exc)
            except Exception as exc:  # noqa: BLE001 - reported, the image is still shown
                log.exception("Saving the result failed")
                result.save_error = f"The image could not be saved ({exc})."
        self.finished.emit(result)


class GenerationController(QObject):
    """Owns at most one worker thread; re-emits its signals on the GUI thread."""

    started = Signal()
    preview = Signal(object)
    progress = Signal(object)
    finished = Signal(object)
    cancelled = Signal()
    failed = Signal(str)
    idle = Signal()  # the thread has fully stopped (after finished/cancelled/failed)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._worker: GenerationWorker | None = None

    @property
    def is_running(self) -> bool:
        return self._thread is not None

    def start(
        self,
        pipeline: Pipeline,
        sampling: SamplingRun,
        max_preview_hz: float = MAX_PREVIEW_HZ,
        finish: Callable[[RunResult], list[Any]] | None = None,
    ) -> None:
        """Run `sampling` (from `pipeline.iterate`) in a new thread; `finish` saves its result there."""
        if self._thread is not None:
            raise UsageError("A generation is already running; cancel it first.")
        thread = QThread()
        thread.setObjectName("generationThread")
        worker = GenerationWorker(pipeline, sampling, max_preview_hz, finish)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.started.connect(self.started)
        worker.preview.connect(self._on_preview)
        worker.progress.connect(self.progress)
        for signal, relay in (
            (worker.finished, self.finished),
            (worker.cancelled, self.cancelled),
            (worker.failed, self.failed),
        ):
            signal.connect(relay)
            # Direct: quit() is thread-safe, and the GUI thread may be blocked in shutdown()'s wait().
            signal.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._on_thread_finished)
        self._thread, self._worker = thread, worker
        thread.start()

    def _on_preview(self, frame: Frame) -> None:
        self.preview.emit(frame)
        if self._worker is not None:
            self._worker.throttle.consumed()

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def _on_thread_finished(self) -> None:
        thread, worker = self._thread, self._worker
        if thread is None:
            return  # already cleaned up by shutdown()
        self._thread = self._worker = None
        thread.wait()
        thread.deleteLater()
        if worker is not None:
            worker.deleteLater()
        self.idle.emit()

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Cancel and wait for the thread (window closing); True if it stopped."""
        thread = self._thread
        if thread is None:
            return True
        self.cancel()
        stopped = thread.wait(timeout_ms)
        if stopped:
            self._on_thread_finished()
        else:  # never destroy a running QThread (Qt aborts): keep it alive until it ends
            log.error("The generation thread did not stop within %d ms.", timeout_ms)
            _ORPHANS.append((thread, self._worker))
            thread.finished.connect(lambda: _ORPHANS.clear())
            self._thread = self._worker = None
        return stopped

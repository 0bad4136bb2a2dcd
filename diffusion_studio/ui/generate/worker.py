"""Generation off the GUI thread: a QObject worker in a QThread (superqt's generator worker).

The GUI thread calls `Pipeline.iterate` (the request is resolved and checked there, once)
and hands the `SamplingRun` to the worker, which drives its steps with
`core.sampling_loop.run_to_end` (the one run-to-the-end, with its NaN check). Cancel sets a
flag checked before every network call, and `Pipeline.cancel()` terminates the call in
flight (`RunOptions.terminate`), so it takes effect within one network call. Previews are
coalesced: at most `max_preview_hz` per second, never while the GUI thread has not yet
taken the previous one, and never beyond a measured cost budget (`PreviewThrottle`: the
time spent converting and showing previews stays under PREVIEW_BUDGET of the run, so a
256² model whose network is fast is not slowed by its pictures); the final step is always
delivered. A step becomes a picture only when the trajectory keeps it or it is previewed.
The GUI thread turns the numpy frames into QImages.
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
PREVIEW_BUDGET = 0.10  # live previews may cost at most this share of a run's time
PREVIEW_FLOOR_S = 0.05  # ... or this much in all, so a short run still shows a few (the first paint is the dearest)
PROGRESS_INTERVAL_S = 1 / 60  # progress-bar updates: at most 60 per second, plus the last step
_ORPHANS: list[tuple[QThread, QObject | None]] = []  # threads that outlived their window


class PreviewThrottle:
    """Decides which steps become previews: rate-limited, coalesced and held to a measured cost budget.

    Headless. The cost of a preview is measured, not guessed: the worker adds the time it spent
    making a picture only for the preview (`add_cost`), the GUI thread the time it took to
    show it (`consumed(seconds)`). A live preview is skipped when the cost so far plus one more
    (the mean measured cost) would exceed `budget` of the run's time so far (or `floor_s`, when
    that is more: the app lets a short run spend PREVIEW_FLOOR_S on a few previews). The first preview
    (nothing measured yet) and the final step are always shown; `share` is the measured cost
    over the run's time. `max_hz <= 0` turns live previews off (the final image still arrives
    with `finished`).
    """

    def __init__(self, max_hz: float = MAX_PREVIEW_HZ, clock: Callable[[], float] = time.perf_counter,
                 budget: float = PREVIEW_BUDGET, floor_s: float = 0.0):
        self.enabled = max_hz > 0
        self.min_interval = 1.0 / max_hz if max_hz > 0 else float("inf")
        self.budget = budget
        self.floor_s = floor_s  # previews may always cost this much in all, whatever the run's length
        self._clock = clock
        self._last = -float("inf")
        self._in_flight = threading.Event()  # set while the GUI has not consumed a preview
        self._lock = threading.Lock()  # the cost is added from the worker and the GUI thread
        self._start: float | None = None
        self._end: float | None = None
        self._cost = 0.0
        self.emitted = 0
        self.skipped_for_cost = 0  # live previews the budget held back

    def start(self) -> None:
        """The run begins: its time, against which the cost is measured, starts now."""
        self._start, self._end = self._clock(), None

    def finish(self) -> None:
        """The run ended: `elapsed` and `share` stay those of the run."""
        self._end = self._clock()

    @property
    def elapsed_s(self) -> float:
        if self._start is None:
            return 0.0
        return (self._end if self._end is not None else self._clock()) - self._start

    @property
    def cost_s(self) -> float:
        with self._lock:
            return self._cost

    @property
    def mean_cost_s(self) -> float:
        """The mean measured cost of one preview (0 before the first)."""
        with self._lock:
            return self._cost / self.emitted if self.emitted else 0.0

    @property
    def share(self) -> float:
        """Measured preview cost / the run's time so far."""
        elapsed = self.elapsed_s
        return self.cost_s / elapsed if elapsed > 0 else 0.0

    def add_cost(self, seconds: float) -> None:
        with self._lock:
            self._cost += max(0.0, float(seconds))

    def _affordable(self, now: float) -> bool:
        with self._lock:
            cost, n = self._cost, self.emitted
        if n == 0 or self._start is None:
            return True  # nothing measured yet
        return cost + cost / n <= max(self.budget * (now - self._start), self.floor_s)

    def should_emit(self, is_last: bool) -> bool:
        if not self.enabled:
            return False
        now = self._clock()
        if self._start is None:
            self._start = now
        if not is_last:
            if self._in_flight.is_set() or now - self._last < self.min_interval:
                return False
            if not self._affordable(now):
                self.skipped_for_cost += 1
                return False
        self._last = now
        with self._lock:
            self.emitted += 1
        self._in_flight.set()
        return True

    def consumed(self, seconds: float = 0.0) -> None:
        """Called from the GUI thread once a preview has been drawn, with the time that took."""
        self.add_cost(seconds)
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
        self.throttle = PreviewThrottle(max_preview_hz, floor_s=PREVIEW_FLOOR_S)

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
        from diffusion_studio.inference.latent import LatentPipeline  # a latent run: VAE decodes on demand

        latent = isinstance(self._pipeline, LatentPipeline)
        trajectory = Trajectory(decoder=self._pipeline.bundle.decode if latent else None)  # type: ignore[attr-defined]
        start = time.perf_counter()
        last_progress = -float("inf")

        def on_step(step: Step) -> None:
            nonlocal last_progress
            if self._cancel.is_set():
                raise Cancelled()
            is_last = step.index == step.count - 1
            keep = is_last or trajectory.keeps(step.index)
            show = self.throttle.should_emit(is_last)
            if keep or show:  # a picture only where one is kept or shown (a 256² step is not free)
                made = time.perf_counter()
                frame = frame_from_step(step)
                if show and not keep:  # made for the preview alone: its cost is the preview's
                    self.throttle.add_cost(time.perf_counter() - made)
                trajectory.record(frame)
            now = time.perf_counter()
            if is_last or now - last_progress >= PROGRESS_INTERVAL_S:
                last_progress = now
                self.progress.emit(Progress(step.index + 1, step.count, now - start))
            if show:
                self.preview.emit(frame)

        self.throttle.start()
        try:
            last = run_to_end(self._sampling.steps, on_step)
            self.throttle.finish()
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
        self.last_throttle: PreviewThrottle | None = None  # the latest run's (its measured preview share)

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
        self.last_throttle = worker.throttle
        thread.start()

    def _on_preview(self, frame: Frame) -> None:
        shown = time.perf_counter()
        self.preview.emit(frame)  # the views render it now (direct connections on this thread)
        if self._worker is not None:
            self._worker.throttle.consumed(time.perf_counter() - shown)

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

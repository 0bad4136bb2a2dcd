"""The loaded model asked about the Forward tab's x_t, off the GUI thread (QtCore, no widgets).

For x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (the workspace's x_0 [C, H, W] and fixed ε; C = 1 for a grey
model, so the network gets [N, 1, H, W]) the model's output is turned
into x̂_0 and ε̂ by `x0_eps_from_output`, the one place that knows what the network predicts:
`core.prediction.interpret_output` with the bundle's prediction kind (ε: DDPM eq. 15; v; x_0)
and variance, x̂_0 clipped as the bundle's samplers clip it. `ModelProbe` runs jobs in a
worker QThread, latest-wins: while one job runs, only the newest request of each kind (one
t, or the coarse MSE curve over t) waits; older ones are dropped. A thread lives only while
there is work, so an idle tab holds none.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from diffusion_studio.core.forward import q_sample
from diffusion_studio.core.prediction import PredictionKind, VarianceKind, interpret_output
from diffusion_studio.core.schedule import Schedule
from diffusion_studio.errors import Cancelled, UsageError

if TYPE_CHECKING:
    from diffusion_studio.ui.models import LoadedModel

log = logging.getLogger(__name__)

CURVE_POINTS = 25  # timesteps of the MSE-over-t curve
CURVE_CHUNK = 8  # images per network call while computing the curve
# Every worker thread until it has finished: a QThread must never be destroyed while it runs,
# also when its tab is deleted first.
_THREADS: list[tuple[QThread, QObject]] = []


@dataclass(frozen=True)
class OutputKind:
    """How to read a bundle's network output (model.json `diffusion`)."""

    prediction: PredictionKind = PredictionKind.EPSILON
    variance: VarianceKind = VarianceKind.FIXED_LARGE
    clip_range: float | None = 1.0  # x̂_0 clipped to [−r, r] as the samplers do; None: not clipped

    @classmethod
    def of(cls, model: LoadedModel) -> OutputKind:
        d = model.bundle.spec.diffusion
        clip = bool(getattr(d, "clip_sample", True))
        return cls(PredictionKind(getattr(d, "prediction", PredictionKind.EPSILON)),
                   VarianceKind(getattr(d, "variance", VarianceKind.FIXED_LARGE)),
                   float(getattr(d, "clip_sample_range", 1.0)) if clip else None)


def x0_eps_from_output(
    schedule: Schedule, x_t: np.ndarray, t: int, output: np.ndarray, kind: OutputKind = OutputKind()
) -> tuple[np.ndarray, np.ndarray]:
    """(x̂_0, ε̂) from one network output for x_t [C, H, W] at t; float32.

    ε-prediction: ε̂ is the output, x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t (eq. 15); v and x_0 models by
    `core.prediction`. x̂_0 is clipped as the samplers clip it; ε̂ is not re-derived from the clipped x̂_0.
    """
    pred = interpret_output(schedule, np.asarray(x_t)[None], np.asarray(output)[None], t, kind.prediction,
                            kind.variance)
    x0 = pred.x0[0]
    if kind.clip_range is not None:
        x0 = np.clip(x0, -kind.clip_range, kind.clip_range)
    return np.asarray(x0, np.float32), np.asarray(pred.eps[0], np.float32)


def curve_timesteps(T: int, count: int = CURVE_POINTS) -> list[int]:
    """`count` timesteps evenly spaced over [1, T], both ends included."""
    return sorted({int(round(v)) for v in np.linspace(1, T, min(count, T))})


def mse(a: np.ndarray, b: np.ndarray) -> float:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(np.mean(d * d))


@dataclass(frozen=True)
class Inputs:
    """What the model's answer depends on besides t; `version` tells stale answers apart."""

    version: int
    model: LoadedModel
    schedule: Schedule
    x_0: np.ndarray  # float32 [C, H, W]
    eps: np.ndarray  # the workspace's fixed ε
    prompt: str


@dataclass(frozen=True)
class Prediction:
    version: int
    t: int
    prompt: str
    x_t: np.ndarray
    x0_pred: np.ndarray  # x̂_0, clipped
    eps_pred: np.ndarray  # ε̂
    mse_x0: float  # MSE(x̂_0, x_0)
    mse_eps: float  # MSE(ε̂, ε): the simplified training loss (eq. 14) at this t and ε


@dataclass(frozen=True)
class MseCurve:
    version: int
    ts: list[int]
    mse_x0: list[float]
    mse_eps: list[float]


def _conditioning(model: LoadedModel, prompt: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """context and mask of the prompt; "" is the unconditional input; (None, None) for a model without text."""
    encoder = model.bundle.text_encoder
    if model.conditioning != "text" or encoder is None:
        return None, None
    if not prompt:
        return model.pipeline.unconditional()
    return encoder.encode([prompt])


def predict(inputs: Inputs, ts: list[int], chunk: int = CURVE_CHUNK,
            stop: threading.Event | None = None) -> list[Prediction]:
    """The model's x̂_0 and ε̂ for x_t at each t of `ts` (one call per `chunk` timesteps)."""
    model, schedule = inputs.model, inputs.schedule
    context, mask = _conditioning(model, inputs.prompt)
    kind = OutputKind.of(model)
    out: list[Prediction] = []
    for start in range(0, len(ts), chunk):
        if stop is not None and stop.is_set():
            raise Cancelled("The model view was closed.")
        part = ts[start:start + chunk]
        x_ts = np.stack([q_sample(schedule, inputs.x_0, t, inputs.eps) for t in part])  # eq. 4
        n = len(part)
        if context is not None and mask is not None:
            outputs = model.bundle.denoiser(x_ts, np.asarray(part, np.int64), np.repeat(context, n, 0),
                                            np.repeat(mask, n, 0))
        else:  # no text: (x_t, t) alone, or with class 0 (this tab has no class picker)
            labels = np.zeros(n, np.int64) if model.conditioning == "class" else None
            outputs = model.bundle.denoiser(x_ts, np.asarray(part, np.int64), class_labels=labels)
        for x_t, t, output in zip(x_ts, part, outputs):
            x0, eps = x0_eps_from_output(schedule, x_t, t, output, kind)
            out.append(Prediction(inputs.version, t, inputs.prompt, x_t, x0, eps,
                                  mse(x0, inputs.x_0), mse(eps, inputs.eps)))
    return out


@dataclass(frozen=True)
class _Job:
    kind: str  # "t" or "curve"
    inputs: Inputs
    t: int = 0


class _Inbox:
    """The newest waiting job of each kind, shared by the GUI thread and the worker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[str, _Job] = {}
        self.running = False
        self.stop = threading.Event()

    def put(self, job: _Job) -> bool:
        """Queue `job` over an older one of its kind; True when a worker must be started."""
        with self.lock:
            self.pending[job.kind] = job
            start = not self.running
            self.running = True
            return start

    def take(self) -> _Job | None:
        """The next job (one t before the curve); None, and the worker ends, when none waits."""
        with self.lock:
            for kind in ("t", "curve"):
                job = self.pending.pop(kind, None)
                if job is not None:
                    return job
            self.running = False
            return None


class _Worker(QObject):
    predicted = Signal(object)  # Prediction
    curveReady = Signal(object)  # MseCurve
    failed = Signal(int, str)  # version, one sentence
    done = Signal()

    def __init__(self, inbox: _Inbox) -> None:
        super().__init__()
        self._inbox = inbox

    @Slot()
    def run(self) -> None:
        inbox = self._inbox
        while not inbox.stop.is_set() and (job := inbox.take()) is not None:
            try:
                if job.kind == "t":
                    self.predicted.emit(predict(job.inputs, [job.t], stop=inbox.stop)[0])
                else:
                    ts = curve_timesteps(job.inputs.schedule.T)
                    results = predict(job.inputs, ts, stop=inbox.stop)
                    self.curveReady.emit(MseCurve(job.inputs.version, ts, [p.mse_x0 for p in results],
                                                  [p.mse_eps for p in results]))
            except Cancelled:
                # Closing, or the Generate tab cancelled its run and the shared session stopped our call.
                if not inbox.stop.is_set():
                    with inbox.lock:
                        inbox.pending.setdefault(job.kind, job)
            except UsageError as exc:
                self.failed.emit(job.inputs.version, str(exc))
            except Exception as exc:  # noqa: BLE001 - shown as a note, logged with the traceback
                log.exception("The model prediction failed")
                self.failed.emit(job.inputs.version, f"The model could not be run ({exc}).")
        if inbox.stop.is_set():
            with inbox.lock:
                inbox.running = False
        self.done.emit()


class ModelProbe(QObject):
    """Asks the model about x_t in a worker thread; answers arrive as signals on the GUI thread."""

    predicted = Signal(object)  # Prediction
    curveReady = Signal(object)  # MseCurve
    failed = Signal(int, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._inbox = _Inbox()
        self._threads: list[QThread] = []

    def request(self, inputs: Inputs, t: int) -> None:
        """x̂_0 and ε̂ at t (replacing a waiting request for another t)."""
        self._put(_Job("t", inputs, int(t)))

    def request_curve(self, inputs: Inputs) -> None:
        """MSE(x̂_0, x_0) and MSE(ε̂, ε) at `CURVE_POINTS` timesteps (after any single t)."""
        self._put(_Job("curve", inputs))

    def busy(self) -> bool:
        with self._inbox.lock:
            return self._inbox.running

    def _put(self, job: _Job) -> None:
        if self._inbox.stop.is_set():
            return
        if self._inbox.put(job):
            self._start()

    def _start(self) -> None:
        thread = QThread()
        thread.setObjectName("forwardModelThread")
        worker = _Worker(self._inbox)
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        worker.predicted.connect(self.predicted)
        worker.curveReady.connect(self.curveReady)
        worker.failed.connect(self.failed)
        worker.done.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        thread.finished.connect(self._reap)
        _reap_finished()
        self._threads.append(thread)
        _THREADS.append((thread, worker))
        thread.start()

    def _reap(self) -> None:
        self._threads = [thread for thread in self._threads if not thread.isFinished()]
        _reap_finished()

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Drop waiting jobs, stop after the call in flight and wait for the thread; True if it stopped."""
        self._inbox.stop.set()
        with self._inbox.lock:
            self._inbox.pending.clear()
        stopped = all(thread.wait(timeout_ms) for thread in self._threads)
        if stopped:
            self._reap()
        return stopped


def _reap_finished() -> None:
    for pair in [pair for pair in _THREADS if pair[0].isFinished()]:
        _THREADS.remove(pair)
        pair[0].deleteLater()
        pair[1].deleteLater()

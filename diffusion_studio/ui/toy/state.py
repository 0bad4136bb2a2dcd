"""The 2D lab's state, headless (numpy and QtCore, no widgets): the point cloud x_0, the timestep t
of the forward process, the MLP ε_θ, its loss curve and the latest samples, with a signal for each.

- forward process (DDPM eq. 4): x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε with one fixed ε per point,
  so moving t only rescales two arrays and the cloud moves smoothly;
- training (Algorithm 1) and sampling (the image samplers of core.sampling_loop) run in
  QThread workers (workers.py); `busy` says which one runs, `cancel()` stops it;
- the field at t: ε̂ = ε_θ(x, t) on a grid, or the score ∇ log p_t(x) ≈ −ε̂ / √(1 − ᾱ_t).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal, Slot

from diffusion_studio.core.params import SamplerKind, check_steps, parse_sampler
from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.core.toy_data import ToyDataset, drawn_points, make_dataset, parse_dataset
from diffusion_studio.core.toy_mlp import MlpConfig, ToyMlp
from diffusion_studio.errors import UsageError
from diffusion_studio.ui.toy.workers import SampleResult, SampleWorker, TrainOutcome, TrainProgress, TrainWorker

log = logging.getLogger(__name__)

SCHEDULE = "linear"
T = 1000
DATA_POINTS = 2000
SAMPLE_POINTS = 1000
DEFAULT_TRAIN_STEPS = 2000
MAX_TRAIN_STEPS = 50_000
MAX_DRAWN = 5000
FIELD_GRID = 15  # arrows per side of the field grid
FIELD_EXTENT = 2.6  # the grid covers [−2.6, 2.6]² (the legend sits above it)
# Steps per sampler when the sampler is chosen: DDPM needs many, the deterministic ones few.
DEFAULT_SAMPLER_STEPS = {SamplerKind.DDPM: 200, SamplerKind.DDIM: 20, SamplerKind.DPMPP_2M: 20}


class FieldKind:
    SCORE = "score"
    EPS = "eps"
    OFF = "off"


@dataclass(frozen=True)
class RunSummary:
    """One sampling run, for the history of distances."""

    sampler: str
    steps: int
    sw_samples: float
    sw_noise: float


class ToyState(QObject):
    dataChanged = Signal()  # a new x_0 (dataset, seed or drawn points); samples were cleared
    tChanged = Signal(int)
    modelChanged = Signal()  # a new (or partly trained) model, or none
    lossChanged = Signal()
    samplesChanged = Signal()
    busyChanged = Signal(str)  # "", "train" or "sample"
    message = Signal(str)  # one sentence for the status line (progress, outcome, errors)

    def __init__(self, parent: QObject | None = None, *, seed: int = 0) -> None:
        super().__init__(parent)
        self.schedule = make_schedule(SCHEDULE, T)
        self.seed = int(seed)
        self.dataset = ToyDataset.MOONS
        self.drawn: np.ndarray = np.zeros((0, 2))
        self._t = 0
        self.model: ToyMlp | None = None
        self.trained_on = ""  # the dataset label the model was trained on
        self.trained_steps = 0
        self.losses: list[float] = []
        self.samples: SampleResult | None = None
        self.history: list[RunSummary] = []
        self.busy = ""
        self._runs: list[tuple[QThread, TrainWorker | SampleWorker]] = []  # until each thread has finished
        self._worker: TrainWorker | SampleWorker | None = None  # the running one
        self._make_data()

    # --- data and the forward process -----------------------------------------------------
    @property
    def T(self) -> int:
        return self.schedule.T

    @property
    def t(self) -> int:
        return self._t

    def set_t(self, t: int) -> None:
        t = int(t)
        if not 0 <= t <= self.T:
            raise UsageError(f"t must lie in 0..{self.T}, got {t}.")
        if t != self._t:
            self._t = t
            self.tChanged.emit(t)

    def alpha_bar(self, t: int | None = None) -> float:
        return self.schedule.alpha_bar(self._t if t is None else t)

    def set_dataset(self, name: str | ToyDataset) -> None:
        kind = parse_dataset(name)
        if kind is not self.dataset:
            self.dataset = kind
            self._make_data()

    def new_data_sample(self) -> None:
        """Another draw of the same distribution (the next seed)."""
        self.seed += 1
        self._make_data()

    def add_drawn(self, points: np.ndarray) -> None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        if len(pts) == 0 or len(self.drawn) >= MAX_DRAWN:
            return
        self.drawn = np.concatenate([self.drawn, pts[: MAX_DRAWN - len(self.drawn)]])
        if self.dataset is ToyDataset.DRAWN:
            self._make_data()

    def clear_drawn(self) -> None:
        self.drawn = np.zeros((0, 2))
        if self.dataset is ToyDataset.DRAWN:
            self._make_data()

    def _draw(self, n: int, seed: int) -> np.ndarray:
        if self.dataset is ToyDataset.DRAWN:
            if len(self.drawn) == 0:
                return np.zeros((0, 2), np.float32)
            return drawn_points(self.drawn, n, seed)
        return make_dataset(self.dataset, n, seed)

    def _make_data(self) -> None:
        self.data = self._draw(DATA_POINTS, self.seed)
        self.reference = self._draw(SAMPLE_POINTS, self.seed + 10_000)  # a fresh draw: the distance floor
        self.eps = np.random.default_rng([self.seed, 0x35]).standard_normal(self.data.shape).astype(np.float32)
        self.samples = None
        self.dataChanged.emit()
        self.samplesChanged.emit()

    def x_t(self, t: int | None = None) -> np.ndarray:
        """The data diffused to t (eq. 4) with the fixed ε; x_0 itself at t = 0."""
        ab = self.alpha_bar(t)
        return (np.sqrt(ab) * self.data + np.sqrt(1.0 - ab) * self.eps).astype(np.float32)

    # --- the learned field ------------------------------------------------------------------
    def field(self, kind: str, t: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """(grid points [G², 2], vectors [G², 2]) at t (t = 0 uses t = 1): ε̂ or the score −ε̂/√(1−ᾱ_t)."""
        if self.model is None or kind == FieldKind.OFF:
            return None
        step = max(1, self._t if t is None else t)
        axis = np.linspace(-FIELD_EXTENT, FIELD_EXTENT, FIELD_GRID)
        gx, gy = np.meshgrid(axis, axis)
        grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
        eps = self.model(grid, np.full(len(grid), step, np.int64)).astype(np.float64)
        if kind == FieldKind.SCORE:
            return grid, -eps / np.sqrt(1.0 - self.alpha_bar(step))
        return grid, eps

    # --- training -----------------------------------------------------------------------------
    def start_training(self, steps: int = DEFAULT_TRAIN_STEPS) -> None:
        """Train a fresh MLP on the current data for `steps` steps, in a worker thread."""
        if self.busy:
            raise UsageError("Wait for the current run to finish (or stop it) first.")
        if not isinstance(steps, int) or not 1 <= steps <= MAX_TRAIN_STEPS:
            raise UsageError(f"Training steps must be an integer between 1 and {MAX_TRAIN_STEPS}, got {steps!r}.")
        if len(self.data) == 0:
            raise UsageError("Draw some points on the plot first (click or drag).")
        model = ToyMlp.create(MlpConfig(), self.T, seed=self.seed)
        self.losses = []
        self.trained_on = self.dataset_label()
        self.trained_steps = 0
        self.lossChanged.emit()
        worker = TrainWorker(model, self.data.copy(), self.schedule, steps, self.seed)
        worker.progress.connect(self._on_train_progress)
        worker.finished.connect(self._on_train_finished)
        worker.failed.connect(self._on_failed)
        self._start(worker, "train")
        self.message.emit(f"Training on {self.trained_on} for {steps} steps…")

    @Slot(object)
    def _on_train_progress(self, progress: TrainProgress) -> None:
        if self.busy != "train":
            return
        self.losses.extend(progress.losses)
        self.model = progress.model
        self.trained_steps = progress.step
        self.lossChanged.emit()
        self.modelChanged.emit()
        rate = progress.step / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
        self.message.emit(f"Training: step {progress.step} of {progress.total} · loss {self.smoothed_loss():.3f}"
                          f" · {rate:.0f} steps/s")

    @Slot(object)
    def _on_train_finished(self, outcome: TrainOutcome) -> None:
        self.model = outcome.model
        self.trained_steps = outcome.steps
        self._finish()
        self.modelChanged.emit()
        how = "Stopped" if outcome.cancelled else "Trained"
        self.message.emit(f"{how} after {outcome.steps} steps in {outcome.elapsed_s:.1f} s"
                          f" (loss {self.smoothed_loss():.3f}). Now sample from it.")

    def smoothed_loss(self, window: int = 100) -> float:
        return float(np.mean(self.losses[-window:])) if self.losses else float("nan")

    def dataset_label(self) -> str:
        from diffusion_studio.core.toy_data import DATASET_LABELS

        return "your drawing" if self.dataset is ToyDataset.DRAWN else DATASET_LABELS[self.dataset]

    # --- sampling -----------------------------------------------------------------------------
    def start_sampling(self, sampler: str, steps: int, count: int = SAMPLE_POINTS) -> None:
        """Run the reverse process with one of the image samplers (core.sampling_loop.sample)."""
        if self.busy:
            raise UsageError("Wait for the current run to finish (or stop it) first.")
        if self.model is None:
            raise UsageError("Train the model first.")
        if len(self.data) == 0:
            raise UsageError("Draw some points on the plot first (click or drag).")
        kind = parse_sampler(sampler)
        steps = check_steps(steps, self.T)
        worker = SampleWorker(self.model.copy(), self.schedule, self.data.copy(), self.reference.copy(),
                              sampler=kind.value, steps=steps, count=count, seed=self.seed)
        worker.finished.connect(self._on_samples)
        worker.cancelled.connect(self._on_sampling_cancelled)
        worker.failed.connect(self._on_failed)
        self._start(worker, "sample")
        self.message.emit(f"Sampling {count} points with {kind.value}, {steps} steps…")

    @Slot(object)
    def _on_samples(self, result: SampleResult) -> None:
        self._finish()
        self.samples = result
        self.history.append(RunSummary(result.sampler, result.steps, result.sw_samples, result.sw_noise))
        self.samplesChanged.emit()
        self.message.emit(f"Sampled in {result.elapsed_s:.1f} s.")

    @Slot()
    def _on_sampling_cancelled(self) -> None:
        self._finish()
        self.message.emit("Sampling stopped.")

    @Slot(str)
    def _on_failed(self, text: str) -> None:
        self._finish()
        self.message.emit(text)

    # --- the worker thread ----------------------------------------------------------------------
    # Each run is a worker object in its own QThread. Python keeps both until the thread has
    # finished and only then lets them go, on the GUI thread: the worker is never deleted while
    # its thread runs (no deleteLater racing a dropped Python reference).
    def _start(self, worker: TrainWorker | SampleWorker, busy: str) -> None:
        thread = QThread(self)
        thread.setObjectName(f"toyLab-{busy}")
        worker.moveToThread(thread)
        thread.started.connect(worker.run)
        ends = [worker.finished, worker.failed] + ([worker.cancelled] if isinstance(worker, SampleWorker) else [])
        for signal in ends:
            signal.connect(thread.quit)  # QThread.quit is thread-safe
        thread.finished.connect(self._on_thread_finished)  # queued to this (GUI) thread
        self._runs.append((thread, worker))
        self._worker = worker
        self.busy = busy
        self.busyChanged.emit(busy)
        thread.start()

    def _finish(self) -> None:
        self._worker = None
        self.busy = ""
        self.busyChanged.emit("")

    @Slot()
    def _on_thread_finished(self) -> None:
        sender = self.sender()
        for run in list(self._runs):
            if run[0] is sender:
                self._runs.remove(run)
                run[0].deleteLater()

    def threads(self) -> list[QThread]:
        """The worker threads not yet reaped (at most one runs)."""
        return [thread for thread, _ in self._runs]

    def cancel(self) -> None:
        """Ask the running worker to stop (training keeps the model so far)."""
        if self._worker is not None:
            self._worker.cancel()

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Stop the worker and wait for its thread (closing the window)."""
        self.cancel()
        stopped = True
        for thread, worker in self._runs:
            worker.cancel()
            thread.quit()
            stopped = bool(thread.wait(timeout_ms)) and stopped
        return stopped

"""The 2D lab's long work off the GUI thread: training the numpy MLP and sampling from it, each a
QObject worker in its own QThread. Both check a cancel flag before every step (training) or
network call (sampling) and report back through queued signals.

OpenBLAS's own threads make the lab's small matrix products (256 × 128 × 128) many times slower
when the CPU is shared, so the workers run BLAS on one thread while they work (threadpoolctl,
when it is installed; otherwise numpy's default).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Signal, Slot

from diffusion_studio.core.sampling_loop import sample
from diffusion_studio.core.schedule import Schedule
from diffusion_studio.core.sliced_wasserstein import sliced_wasserstein
from diffusion_studio.core.toy_mlp import ToyMlp, ToyTrainer
from diffusion_studio.errors import Cancelled, UsageError

PROGRESS_INTERVAL_S = 0.1  # training progress (loss points and a snapshot of the model) at most 10 per second
PATH_COUNT = 24  # reverse trajectories kept (the first points of the batch)


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:  # optional: without it numpy keeps its own thread count
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@dataclass(frozen=True)
class TrainProgress:
    step: int  # steps done
    total: int
    losses: list[float]  # the losses of the steps since the last report
    model: ToyMlp  # a snapshot of the averaged (EMA) weights, a copy the GUI thread may keep
    elapsed_s: float


@dataclass(frozen=True)
class TrainOutcome:
    model: ToyMlp  # the averaged (EMA) weights
    steps: int  # steps done (fewer than asked when cancelled)
    cancelled: bool
    elapsed_s: float


@dataclass(frozen=True)
class SampleResult:
    sampler: str
    steps: int
    x_T: np.ndarray  # [N, 2] the initial noise
    x_0: np.ndarray  # [N, 2] the samples
    frames: list[np.ndarray]  # x after each step: frames[k] at timestep ts[k] (frames[0] is x_T)
    ts: list[int]  # T, then each step's t_prev (0 last)
    sw_samples: float  # SW₁(samples, data)
    sw_noise: float  # SW₁(x_T, data)
    sw_floor: float  # SW₁(a fresh draw of the data, data): what a perfect model would score
    elapsed_s: float

    @property
    def paths(self) -> np.ndarray:
        """[K, steps + 1, 2]: the reverse trajectories of the first K points, from x_T to x_0."""
        return np.stack([f[:PATH_COUNT] for f in self.frames], axis=1)


class TrainWorker(QObject):
    """DDPM Algorithm 1 on the point cloud for `steps` steps (core.toy_mlp.ToyTrainer)."""

    progress = Signal(object)  # TrainProgress
    finished = Signal(object)  # TrainOutcome (also after a cancel: the model so far)
    failed = Signal(str)

    def __init__(self, model: ToyMlp, data: np.ndarray, schedule: Schedule, steps: int, seed: int) -> None:
        super().__init__()
        self._model, self._data, self._schedule = model, data, schedule
        self._steps, self._seed = steps, seed
        self._stop = threading.Event()

    def cancel(self) -> None:
        self._stop.set()

    @Slot()
    def run(self) -> None:
        start = time.perf_counter()
        try:
            with single_blas_thread():
                trainer = ToyTrainer(self._model, self._data, self._schedule, steps=self._steps, seed=self._seed)
                pending: list[float] = []
                last_report = start
                done = 0
                while done < self._steps and not self._stop.is_set():
                    loss = trainer.step()
                    done += 1
                    if not math.isfinite(loss):
                        self.failed.emit(f"Training diverged at step {done} (the loss is not a finite number).")
                        return
                    pending.append(loss)
                    now = time.perf_counter()
                    if now - last_report >= PROGRESS_INTERVAL_S or done == self._steps:
                        self.progress.emit(TrainProgress(done, self._steps, pending, trainer.ema_model(), now - start))
                        pending, last_report = [], now
                if pending:
                    self.progress.emit(TrainProgress(done, self._steps, pending, trainer.ema_model(),
                                                     time.perf_counter() - start))
                model = trainer.ema_model()
        except UsageError as exc:
            self.failed.emit(str(exc))
            return
        self.finished.emit(TrainOutcome(model, done, self._stop.is_set(), time.perf_counter() - start))


class SampleWorker(QObject):
    """Runs core.sampling_loop.sample (the samplers the images use) on the MLP and measures SW₁."""

    finished = Signal(object)  # SampleResult
    cancelled = Signal()
    failed = Signal(str)

    def __init__(self, model: ToyMlp, schedule: Schedule, data: np.ndarray, reference: np.ndarray, *,
                 sampler: str, steps: int, count: int, seed: int) -> None:
        """`reference`: a fresh draw from the data's distribution (its SW₁ to the data is the floor)."""
        super().__init__()
        self._model, self._schedule, self._data, self._reference = model, schedule, data, reference
        self._sampler, self._steps, self._count, self._seed = sampler, steps, count, seed
        self._stop = threading.Event()

    def cancel(self) -> None:
        self._stop.set()

    @Slot()
    def run(self) -> None:
        start = time.perf_counter()
        frames: list[np.ndarray] = []
        ts: list[int] = [self._schedule.T]

        def eps_fn(x: np.ndarray, t: np.ndarray) -> np.ndarray:
            if not frames:
                frames.append(np.array(x, dtype=np.float32))  # the first call sees x_T
            return self._model(x, t)

        try:
            with single_blas_thread():
                for step in sample(eps_fn=eps_fn, schedule=self._schedule, shape=(self._count, 2),
                                   sampler=self._sampler, steps=self._steps,
                                   rng=np.random.default_rng([self._seed, 0x33]), clip_x0=False,
                                   should_stop=self._stop.is_set):
                    frames.append(np.array(step.x_prev, dtype=np.float32))
                    ts.append(step.t_prev)
        except Cancelled:
            self.cancelled.emit()
            return
        except UsageError as exc:
            self.failed.emit(str(exc))
            return
        x_T, x_0 = frames[0], frames[-1]
        if not np.all(np.isfinite(x_0)):
            self.failed.emit("The model produced NaN or infinite values; train it again.")
            return
        self.finished.emit(SampleResult(
            sampler=self._sampler, steps=self._steps, x_T=x_T, x_0=x_0, frames=frames, ts=ts,
            sw_samples=sliced_wasserstein(x_0, self._data), sw_noise=sliced_wasserstein(x_T, self._data),
            sw_floor=sliced_wasserstein(self._reference, self._data),
            elapsed_s=time.perf_counter() - start,
        ))

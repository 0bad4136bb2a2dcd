"""Execution provider choice (auto | cuda | cpu), session options, and honest fallback reports.

A session that was asked for CUDA but runs on the CPU is never silent: `ProviderInfo`
records why (the missing library, the exception text), and an explicit `cuda` request
also raises a `RuntimeWarning`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnxruntime as ort

from diffusion_studio.errors import UsageError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEVICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class ProviderInfo:
    """Which execution provider a session really runs on, and why if it is not the one asked for."""

    requested: str  # "auto" | "cuda" | "cpu"
    active: str  # session.get_providers()[0]
    fallback_reason: str | None
    onnxruntime_version: str
    model_file: str = ""  # the ONNX file the session runs (unet.onnx or unet.fp16.onnx)
    note: str | None = None  # e.g. "fp16 produced NaN; switched to fp32"

    @property
    def on_cuda(self) -> bool:
        return self.active == CUDA

    @property
    def device_label(self) -> str:
        """Short label for the GUI / CLI: "CUDA" or "CPU"."""
        return "CUDA" if self.on_cuda else "CPU"

    def describe(self) -> str:
        """One line: provider, runtime version and, when there was one, the fallback reason."""
        text = f"{self.active} (onnxruntime {self.onnxruntime_version})"
        if self.model_file:
            text += f", {self.model_file}"
        if self.fallback_reason:
            text += f"; {self.requested} requested but fell back: {self.fallback_reason}"
        if self.note:
            text += f"; {self.note}"
        return text

    def with_note(self, note: str) -> ProviderInfo:
        return replace(self, note=note if not self.note else f"{self.note}; {note}")


def check_device(device: str) -> str:
    """Normalise a device name; bad names are a UsageError."""
    name = str(device).strip().lower()
    if name not in DEVICES:
        raise UsageError(f"Unknown device {device!r}; choose one of auto, cuda, cpu.")
    return name


def physical_cores() -> int:
    """Physical cores usable by this process (hyper-threads share one core's FPU, so skip them)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        physical_id = core_id = ""
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "physical id":
                physical_id = value.strip()
            elif key == "core id":
                core_id = value.strip()
                cores.add((physical_id, core_id))
    except OSError:
        pass
    physical = len(cores) if cores else (os.cpu_count() or 1)
    return max(1, min(usable, physical))


# Intra-op threads for sessions created without an explicit count (None: one per physical core).
_DEFAULT_INTRA_OP_THREADS: ContextVar[int | None] = ContextVar("default_intra_op_threads", default=None)


def interactive_threads() -> int:
    """Intra-op threads for an interactive app: every physical core but one, which stays free
    for the GUI thread (ONNX Runtime's pool threads spin between ops and would compete with it)."""
    return max(1, physical_cores() - 1)


@contextlib.contextmanager
def default_intra_op_threads(threads: int | None) -> Iterator[None]:
    """Sessions created in this block (in this thread) use `threads` intra-op threads unless a
    count is given explicitly; outside it the default stays one per physical core."""
    if threads is not None and threads < 1:
        raise UsageError(f"intra-op threads must be at least 1, got {threads}.")
    token = _DEFAULT_INTRA_OP_THREADS.set(threads)
    try:
        yield
    finally:
        _DEFAULT_INTRA_OP_THREADS.reset(token)


def session_options(intra_op_threads: int | None = None) -> ort.SessionOptions:
    """Session options chosen deliberately for a small conv/attention U-Net."""
    opts = ort.SessionOptions()
    # All graph optimisations (constant folding, conv+activation and attention fusions, layout
    # transforms); the U-Net graph is static, so the one-off optimisation cost pays back every step.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # One thread per physical core; hyper-threads only fight over the same FMA units.
    opts.intra_op_num_threads = intra_op_threads or _DEFAULT_INTRA_OP_THREADS.get() or physical_cores()
    opts.inter_op_num_threads = 1
    # The U-Net is one long chain of dependent ops: parallel execution only adds scheduling overhead.
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Shapes repeat every step (same N, C, H, W), so memory planning can be reused.
    opts.enable_mem_pattern = True
    opts.enable_cpu_mem_arena = True
    # Keep onnxruntime's own log to errors; fallbacks are reported through ProviderInfo instead.
    opts.log_severity_level = 3
    return opts


def cuda_provider_options(device_id: int = 0) -> dict[str, Any]:
    """CUDA execution-provider options."""
    return {
        "device_id": device_id,
        # cuDNN's default EXHAUSTIVE search benchmarks every convolution algorithm for every
        # conv shape on the first run, which can make the first image minutes late; HEURISTIC
        # asks cuDNN's heuristics for the algorithm instead (near-optimal for small U-Nets).
        "cudnn_conv_algo_search": "HEURISTIC",
        # Grow the device memory arena by exactly what is requested instead of the next power
        # of two, so a small model does not reserve gigabytes it never uses.
        "arena_extend_strategy": "kSameAsRequested",
        # Copies on the compute stream: no cross-stream races with IO binding.
        "do_copy_in_default_stream": True,
    }


def _provider_library(name: str) -> Path | None:
    capi = Path(ort.__file__).resolve().parent / "capi"
    filename = f"onnxruntime_providers_{name}.dll" if sys.platform == "win32" else f"libonnxruntime_providers_{name}.so"
    path = capi / filename
    return path if path.exists() else None


@functools.lru_cache(maxsize=1)
def cuda_unusable_reason() -> str | None:
    """Why the CUDA provider cannot be used in this process, or None when it may work.

    Calls `onnxruntime.preload_dlls()` (where it exists) first, so CUDA / cuDNN libraries
    installed from pip (nvidia-* wheels) are found, then tries to load the CUDA provider
    library itself: a missing dependency shows up here as a clear loader message instead of
    onnxruntime's multi-line log. Cached: the answer does not change within a process.
    """
    if CUDA not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        captured = io.StringIO()
        try:  # preload_dlls prints its misses; they are summarised by the load below instead
            with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
                preload()
        except Exception:  # noqa: BLE001 - preloading is best effort; the load below decides
            pass
    library = _provider_library("cuda")
    if library is None:
        return None  # unusual layout: let onnxruntime decide when the session is created
    try:
        ctypes.CDLL(str(library))
    except OSError as exc:
        return f"CUDA provider could not be loaded ({exc}){_missing_library_hint(str(exc))}"
    return None


# The CUDA 13 / cuDNN 9 pip wheels that hold what onnxruntime-gpu's CUDA provider links against
# (checked by benchmarks/cuda_libs.py); libcuda.so.1 is the NVIDIA driver, which no wheel brings.
_LIBRARY_WHEELS = {"libcudart": "nvidia-cuda-runtime", "libcublas": "nvidia-cublas", "libcurand": "nvidia-curand",
                   "libcudnn": "nvidia-cudnn-cu13"}


def _missing_library_hint(message: str) -> str:
    if "libcuda.so" in message:
        return "; the NVIDIA driver is not installed or no GPU is visible"
    for prefix, wheel in _LIBRARY_WHEELS.items():
        if prefix in message:
            return f"; pip install {' '.join(_LIBRARY_WHEELS.values())} (missing: {wheel})"
    return ""


def _cuda_failure_text(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"CUDA session could not be created ({lines[-1] if lines else type(exc).__name__})"


def create_session(
    model: Path | bytes,
    device: str = "auto",
    *,
    intra_op_threads: int | None = None,
) -> tuple[ort.InferenceSession, ProviderInfo]:
    """An InferenceSession on the requested device, with a report of where it really runs.

    `cuda` falls back to the CPU with a `RuntimeWarning` and a reason; `auto` uses CUDA when
    it loads and otherwise the CPU (with the reason when CUDA was listed). Errors that are not
    about CUDA (a corrupt model, say) propagate as onnxruntime raised them.
    """
    device = check_device(device)
    source = str(model) if isinstance(model, Path) else model
    model_file = model.name if isinstance(model, Path) else ""
    version = ort.__version__
    opts = session_options(intra_op_threads)

    reason: str | None = None
    want_cuda = device == "cuda" or (device == "auto" and CUDA in ort.get_available_providers())
    session: ort.InferenceSession | None = None
    if want_cuda:
        reason = cuda_unusable_reason()
        if reason is None:
            try:
                session = ort.InferenceSession(
                    source, sess_options=opts, providers=[(CUDA, cuda_provider_options()), CPU]
                )
            except Exception as exc:  # noqa: BLE001 - retried on CPU below; a bad model fails there too
                reason = _cuda_failure_text(exc)
                opts = session_options(intra_op_threads)
            else:
                if session.get_providers()[0] != CUDA:
                    reason = "CUDA provider could not be created (no usable GPU or driver was found)"
    if session is None:
        session = ort.InferenceSession(source, sess_options=opts, providers=[CPU])
    info = ProviderInfo(
        requested=device,
        active=session.get_providers()[0],
        fallback_reason=reason if want_cuda and session.get_providers()[0] != CUDA else None,
        onnxruntime_version=version,
        model_file=model_file,
    )
    if device == "cuda" and info.fallback_reason:
        warnings.warn(
            f"CUDA was requested but the model runs on the CPU: {info.fallback_reason}.",
            RuntimeWarning,
            stacklevel=2,
        )
    return session, info


def available_devices() -> Sequence[str]:
    """Devices worth offering in a device picker (cuda only when it can actually load)."""
    return ("auto", "cuda", "cpu") if cuda_unusable_reason() is None else ("auto", "cpu")

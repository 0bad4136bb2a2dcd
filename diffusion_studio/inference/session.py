"""`OrtDenoiser`: the core Denoiser protocol, eps = ε_θ(x_t, t, context, mask), over an ONNX U-Net.

On CUDA the inputs are bound to device memory once per call and the output stays on the
device until one copy back (IO binding). `cancel()` stops the call in flight through
`RunOptions.terminate`. An fp16 graph whose output turns NaN or Inf is replaced by the fp32
graph for the rest of the session, and the switch is reported.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from diffusion_studio.errors import Cancelled
from diffusion_studio.inference.providers import ProviderInfo, create_session

INPUT_NAMES = ("x", "t", "context", "context_mask")
OUTPUT_NAME = "eps"

_NUMPY_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}

SessionFactory = Callable[[], tuple[ort.InferenceSession, ProviderInfo]]


def _is_terminated(exc: BaseException) -> bool:
    return "terminate" in str(exc).lower()


class OrtDenoiser:
    """ε_θ(x_t, t, context, context_mask) -> eps on an onnxruntime session (the Denoiser protocol)."""

    def __init__(
        self,
        session: ort.InferenceSession,
        info: ProviderInfo,
        *,
        fp32_fallback: SessionFactory | None = None,
        use_io_binding: bool | None = None,
    ) -> None:
        """`fp32_fallback` opens the fp32 graph when this (fp16) one produces NaN or Inf.

        `use_io_binding` defaults to True on CUDA; it can be forced on the CPU to test that path.
        """
        self._lock = threading.Lock()
        self._in_flight: ort.RunOptions | None = None
        self._fp32_fallback = fp32_fallback
        self._force_binding = use_io_binding
        self._set_session(session, info)

    @classmethod
    def from_file(cls, path: Path, device: str = "auto", **kwargs: object) -> OrtDenoiser:
        session, info = create_session(Path(path), device)
        return cls(session, info, **kwargs)  # type: ignore[arg-type]

    def _set_session(self, session: ort.InferenceSession, info: ProviderInfo) -> None:
        self.session = session
        self.info = info
        self._input_dtypes = {
            arg.name: _NUMPY_DTYPES.get(arg.type, np.float32) for arg in session.get_inputs()
        }
        self._io_binding = info.on_cuda if self._force_binding is None else self._force_binding
        self._device = "cuda" if info.on_cuda else "cpu"

    @property
    def provider_info(self) -> ProviderInfo:
        return self.info

    def __call__(
        self, x: np.ndarray, t: np.ndarray, context: np.ndarray, context_mask: np.ndarray
    ) -> np.ndarray:
        feeds = {
            "x": x,
            "t": np.asarray(t, dtype=np.int64).reshape(-1),
            "context": context,
            "context_mask": context_mask,
        }
        feeds = {
            name: np.ascontiguousarray(value, dtype=self._input_dtypes.get(name, np.float32))
            for name, value in feeds.items()
        }
        eps = self._run(feeds)
        if not np.all(np.isfinite(eps)) and self._fp32_fallback is not None:
            self._switch_to_fp32()
            eps = self._run(feeds)
        return eps.astype(np.float32, copy=False)

    def _switch_to_fp32(self) -> None:
        factory, self._fp32_fallback = self._fp32_fallback, None
        if factory is None:
            return
        old = self.info.model_file or "the fp16 graph"
        session, info = factory()
        note = f"{old} produced NaN/Inf, switched to {info.model_file or 'the fp32 graph'}"
        warnings.warn(f"{note}.", RuntimeWarning, stacklevel=3)
        self._set_session(session, info.with_note(note))

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        run_options = ort.RunOptions()  # fresh per call: a past cancel never poisons the next one
        with self._lock:
            self._in_flight = run_options
        try:
            if self._io_binding:
                return self._run_bound(feeds, run_options)
            return self.session.run([OUTPUT_NAME], feeds, run_options)[0]
        except Exception as exc:
            if run_options.terminate or _is_terminated(exc):
                raise Cancelled("Generation was cancelled.") from exc
            raise
        finally:
            with self._lock:
                self._in_flight = None

    def _run_bound(self, feeds: dict[str, np.ndarray], run_options: ort.RunOptions) -> np.ndarray:
        binding = self.session.io_binding()
        for name, value in feeds.items():
            # One host-to-device copy per input; the U-Net reads them straight from device memory.
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, self._device, 0))
        binding.bind_output(OUTPUT_NAME, self._device, 0)  # eps stays on the device ...
        self.session.run_with_iobinding(binding, run_options)
        return binding.copy_outputs_to_cpu()[0]  # ... until this single copy back

    def cancel(self) -> None:
        """Stop the network call in flight (if any); it raises `Cancelled` in its thread."""
        with self._lock:
            if self._in_flight is not None:
                self._in_flight.terminate = True

"""ONNX Runtime session options on the CPU, side by side: what real engines tune.

One guided step (batch 2) of the shipped U-Net per variant: graph optimisation level, intra-op
threads, IO binding with inputs and a pre-allocated output bound once (no per-call allocation),
a saved optimised model loaded without re-optimising and (full runs) an int8 QDQ U-Net. Each
row has the per-call median, the session creation time, and the largest and the relative RMS
difference from the default session's ε̂ (a float variant must stay at float noise; int8 is only
a candidate if `diffusion-studio eval` then holds every quality bar on it).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import peers
from benchmarks.timing import median_seconds, ratio

BATCH = 2


def _session(path: Path, level: str = "ORT_ENABLE_ALL", threads: int | None = None, save_to: Path | None = None
             ) -> tuple[Any, float]:
    import onnxruntime as ort

    from diffusion_studio.inference.providers import session_options

    opts = session_options(threads)
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if save_to is not None:
        opts.optimized_model_filepath = str(save_to)
    start = time.perf_counter()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session, time.perf_counter() - start


def _feeds(bundle: Any) -> dict[str, np.ndarray]:
    spec = bundle.spec
    rng = np.random.default_rng(0)
    context, mask = bundle.text_encoder.encode([peers.PROMPT, ""])
    return {"x": rng.standard_normal((BATCH, spec.channels, spec.image_size, spec.image_size)).astype(np.float32),
            "t": np.full((BATCH,), spec.T // 2, dtype=np.int64), "context": context, "context_mask": mask}


def _plain(session: Any, feeds: dict[str, np.ndarray]) -> Any:
    name = session.get_outputs()[0].name
    return lambda: session.run([name], feeds)[0]


def _bound(session: Any, feeds: dict[str, np.ndarray]) -> Any:
    """Inputs and a pre-allocated output bound once; each call only runs (what a fixed-shape
    sampling loop can do: x_t is written into the bound buffer in place)."""
    import onnxruntime as ort

    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value))
    out = np.empty_like(feeds["x"])
    binding.bind_output(session.get_outputs()[0].name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)

    def call() -> np.ndarray:
        session.run_with_iobinding(binding)
        return out

    return call


def _calibration(bundle: Any) -> list[dict[str, np.ndarray]]:
    """Calibration feeds for int8: the real x_t of a 20-step guided run per prompt (not random x)."""
    from diffusion_studio.inference.pipeline import GenerationRequest, Pipeline

    pipeline = Pipeline(bundle)
    feeds: list[dict[str, np.ndarray]] = []
    for seed, prompt in enumerate((peers.PROMPT, "a small blue square in the bottom right on a white background")):
        context, mask = bundle.text_encoder.encode([prompt, ""])
        steps: list[Any] = []
        request = GenerationRequest(prompt=prompt, sampler="dpmpp-2m", steps=20, seed=seed)
        pipeline.generate(request, on_step=steps.append)
        for step in steps[:-1]:  # x_prev of step i is the x_t the network sees at step i + 1
            x = np.repeat(step.x_prev.astype(np.float32), BATCH, axis=0)
            feeds.append({"x": x, "t": np.full((BATCH,), max(1, step.t_prev), dtype=np.int64),
                          "context": context, "context_mask": mask})
    return feeds


def _int8(path: Path, folder: Path, bundle: Any) -> tuple[Any, float]:
    """A QDQ int8 U-Net (static, per-channel weights, calibrated on real x_t); session time only."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    feeds = iter(_calibration(bundle))

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(feeds, None)

    path, folder = path.resolve(), folder.resolve()
    pre, out = folder / "unet.pre.onnx", folder / "unet.int8.onnx"
    # The quantization tools write scratch files (sym_shape_infer_temp.onnx, <uuid>.data) into the
    # working directory: run them inside the temporary folder so a checkout stays clean.
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        quant_pre_process(str(path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        os.chdir(cwd)
    return _session(out)


def run(bundle: Any, *, repeat: int, int8: bool = True) -> dict[str, Any]:
    from diffusion_studio.inference.providers import physical_cores

    path = bundle.folder / bundle.spec.unet_file
    feeds = _feeds(bundle)
    cores = physical_cores()
    rows: list[dict[str, Any]] = []
    reference: np.ndarray | None = None
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "unet.optimized.onnx"
        variants = [
            ("default: ORT_ENABLE_ALL, one thread per physical core", lambda: _session(path), _plain),
            ("ORT_ENABLE_EXTENDED", lambda: _session(path, "ORT_ENABLE_EXTENDED"), _plain),
            ("ORT_ENABLE_BASIC", lambda: _session(path, "ORT_ENABLE_BASIC"), _plain),
            ("ORT_DISABLE_ALL", lambda: _session(path, "ORT_DISABLE_ALL"), _plain),
            ("1 intra-op thread", lambda: _session(path, threads=1), _plain),
            ("IO binding, pre-allocated output", lambda: _session(path), _bound),
            ("saved optimised model (EXTENDED), loaded without optimising",
             lambda: _load_saved(path, saved), _plain),
        ]
        if int8:
            variants.append(("int8 QDQ (static, per-channel, calibrated on 40 real x_t)",
                             lambda: _int8(path, Path(tmp), bundle), _plain))
        for name, make, wrap in variants:
            session, created = make()
            call = wrap(session, feeds)
            seconds = median_seconds(call, repeat, warmup=2)
            out = np.array(call())
            reference = out if reference is None else reference
            rms_error = float(np.sqrt(np.mean((out - reference) ** 2) / np.mean(reference**2)))
            rows.append({"variant": name, "call_ms": seconds * 1e3, "session_s": created,
                         "max_abs_diff": float(np.abs(out - reference).max()), "relative_rms_error": rms_error})
    base = rows[0]["call_ms"]
    for row in rows:
        row["speedup_vs_default"] = ratio(base, row["call_ms"])
    return {"batch": BATCH, "physical_cores": cores, "rows": rows}


def _load_saved(path: Path, saved: Path) -> tuple[Any, float]:
    """Optimise once and save (EXTENDED: portable across machines with the same ORT; ALL adds
    layout changes tied to this CPU), then time opening the saved graph with no optimisation."""
    _session(path, "ORT_ENABLE_EXTENDED", save_to=saved)
    session, created = _session(saved, "ORT_DISABLE_ALL")
    return session, created

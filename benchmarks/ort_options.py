"""ONNX Runtime session options on the CPU, side by side: what real engines tune.

One guided step (batch 2) of the shipped U-Net per variant: graph optimisation level, intra-op
threads, IO binding with inputs and a pre-allocated output bound once (no per-call allocation),
and a saved optimised model loaded without re-optimising. Each row has the per-call median,
the session creation time and the largest difference from the default session's output (a
variant that changes the numbers beyond float noise is not a speed-up).
"""

from __future__ import annotations

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


def run(bundle: Any, *, repeat: int) -> dict[str, Any]:
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
        for name, make, wrap in variants:
            session, created = make()
            call = wrap(session, feeds)
            seconds = median_seconds(call, repeat, warmup=2)
            out = np.array(call())
            reference = out if reference is None else reference
            rows.append({"variant": name, "call_ms": seconds * 1e3, "session_s": created,
                         "max_abs_diff": float(np.abs(out - reference).max())})
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

"""The GPU table (`python -m benchmarks --gpu`): the shipped U-Net on the CUDA execution provider.

Rows per batch (1, 8, 64): CPU EP fp32; CUDA fp32 with and without IO binding; CUDA fp16
(the bundle's unet.fp16.onnx) with IO binding; CUDA fp32 with a captured CUDA graph (fixed
shapes, inputs and output pre-bound on the device, `enable_cuda_graph`). Then one image end
to end on CUDA, and training images/s on torch CUDA (ours vs diffusers) at batch 64.

Without a usable CUDA provider it measures nothing and says why: a GPU number is never faked.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from benchmarks import e2e, peers, training
from benchmarks.timing import median_seconds, ratio

BATCHES = (1, 8, 64)


def unavailable_reason() -> str | None:
    """Why the GPU table cannot run here, or None."""
    from diffusion_studio.inference.providers import cuda_unusable_reason

    reason = cuda_unusable_reason()
    if reason is not None:
        return reason
    import onnxruntime as ort

    try:
        from diffusion_studio.inference.providers import CUDA, create_session

        session, info = create_session(peers.bundle_folder() / "unet.onnx", "cuda")
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the table says why it is empty
        return f"CUDA session failed: {exc}"
    if session.get_providers()[0] != CUDA:
        return info.fallback_reason or f"CUDA provider inactive (onnxruntime {ort.__version__})"
    return None


def _feeds(session: Any, n: int, context: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    from diffusion_studio.inference.session import _NUMPY_DTYPES

    rng = np.random.default_rng(0)
    shape = session.get_inputs()[0].shape
    size = int(shape[-1])
    values = {
        "x": rng.standard_normal((n, int(shape[1]), size, size)),
        "t": np.full((n,), 500),
        "context": np.repeat(context, n, axis=0),
        "context_mask": np.repeat(mask, n, axis=0),
    }
    return {arg.name: np.ascontiguousarray(values[arg.name], dtype=_NUMPY_DTYPES[arg.type])
            for arg in session.get_inputs()}


def _cuda_graph_seconds(path: Any, feeds: dict[str, np.ndarray], repeat: int) -> float:
    """ONNX Runtime CUDA graphs: capture on the first run, replay after; every input and the
    output must stay at the same device address, so all are bound once as OrtValues."""
    import onnxruntime as ort

    from diffusion_studio.inference.providers import CPU, CUDA, cuda_provider_options, session_options

    options = {**cuda_provider_options(), "enable_cuda_graph": "1"}
    session = ort.InferenceSession(str(path), session_options(), providers=[(CUDA, options), CPU])
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
    n, _, h, w = feeds["x"].shape
    out = session.get_outputs()[0]
    out_channels = out.shape[1] if isinstance(out.shape[1], int) else feeds["x"].shape[1]
    output = ort.OrtValue.ortvalue_from_shape_and_type((n, out_channels, h, w), feeds["x"].dtype, "cuda", 0)
    binding.bind_ortvalue_output(out.name, output)

    def call() -> None:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return median_seconds(call, repeat, warmup=3)


def run(*, repeat: int = 20, batches: tuple[int, ...] = BATCHES) -> dict[str, Any]:
    reason = unavailable_reason()
    if reason is not None:
        from benchmarks import cuda_libs

        return {"available": False, "reason": reason, "cuda_libs": cuda_libs.check()}
    from diffusion_studio.inference.providers import create_session
    from diffusion_studio.inference.session import OrtDenoiser

    bundle = peers.load_bundle("cuda")
    folder = bundle.folder
    context, mask = bundle.text_encoder.encode([peers.PROMPT])
    fp32 = folder / bundle.spec.unet_file
    fp16 = folder / bundle.spec.unet_fp16_file if bundle.spec.unet_fp16_file else None
    cpu_session, cpu_info = create_session(fp32, "cpu")
    variants: dict[str, Any] = {
        "cpu_fp32": OrtDenoiser(cpu_session, cpu_info),
        "cuda_fp32_no_binding": OrtDenoiser.from_file(fp32, "cuda", use_io_binding=False),
        "cuda_fp32_io_binding": OrtDenoiser.from_file(fp32, "cuda", use_io_binding=True),
    }
    if fp16 is not None:
        variants["cuda_fp16_io_binding"] = OrtDenoiser.from_file(fp16, "cuda", use_io_binding=True)
    rows = []
    for n in batches:
        row: dict[str, Any] = {"batch": n}
        for name, denoiser in variants.items():
            feeds = _feeds(denoiser.session, n, context, mask)
            call = partial(denoiser, *(feeds[k] for k in ("x", "t", "context", "context_mask")))
            row[f"{name}_ms"] = median_seconds(call, repeat, warmup=3) * 1e3
        try:
            row["cuda_fp32_cuda_graph_ms"] = _cuda_graph_seconds(fp32, _feeds(cpu_session, n, context, mask),
                                                                 repeat) * 1e3
        except Exception as exc:  # noqa: BLE001 - some graphs cannot be captured; the table says so
            row["cuda_fp32_cuda_graph_ms"] = None
            row["cuda_graph_error"] = " ".join(str(exc).split())[:200]
        row["speedup_cuda_vs_cpu"] = ratio(row["cpu_fp32_ms"], row["cuda_fp32_io_binding_ms"])
        row["speedup_io_binding"] = ratio(row["cuda_fp32_no_binding_ms"], row["cuda_fp32_io_binding_ms"])
        if "cuda_fp16_io_binding_ms" in row:
            row["speedup_fp16_vs_fp32"] = ratio(row["cuda_fp32_io_binding_ms"], row["cuda_fp16_io_binding_ms"])
        row["images_per_s_best"] = n / (min(v for k, v in row.items() if k.startswith("cuda_") and k.endswith("_ms")
                                            and isinstance(v, float)) / 1e3)
        rows.append(row)
    result: dict[str, Any] = {"available": True, "provider": bundle.provider_info.describe(), "rows": rows,
                              "device": _device_name()}
    ours_s, guidance = e2e._ours(bundle, e2e.STEPS, max(3, repeat // 4))
    result["e2e"] = {"ours_s": ours_s, "steps": e2e.STEPS, "guidance": guidance,
                     "provider": bundle.provider_info.describe()}
    try:
        import torch

        if torch.cuda.is_available():
            result["training"] = training.run(batch=64, repeat=max(3, repeat // 4), device="cuda")
    except ImportError:
        pass
    return result


def _device_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        return None

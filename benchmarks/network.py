"""One network call: the shipped U-Net in ONNX Runtime vs the same weights in torch eager.

Per batch: medians in ms, the speed-up, the model's FLOPs (model.json: flops_per_forward per
image) and the GFLOP/s each reaches as a fraction of this machine's float32 matmul peak,
measured in the same run (machine.matmul_peak_gflops).
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import numpy as np

from benchmarks import peers
from benchmarks.timing import median_seconds, ratio


def flops_per_image(bundle: Any) -> int | None:
    facts = json.loads((bundle.folder / "model.json").read_text()).get("unet", {})
    value = facts.get("flops_per_forward")
    return int(value) if isinstance(value, (int, float)) else None


def run(bundle: Any, peak_gflops: float, *, batches: tuple[int, ...], repeat: int) -> dict[str, Any]:
    spec = bundle.spec
    rng = np.random.default_rng(0)
    flops = flops_per_image(bundle)
    torch_model, weights = peers.our_torch_unet(bundle)
    from diffusion_studio.training.denoiser import TorchDenoiser

    eager = TorchDenoiser(torch_model)
    rows = []
    for n in batches:
        x = rng.standard_normal((n, spec.channels, spec.image_size, spec.image_size)).astype(np.float32)
        t = np.full((n,), spec.T // 2, dtype=np.int64)
        context, mask = bundle.text_encoder.encode([peers.PROMPT] * n)
        ort_s = median_seconds(partial(bundle.denoiser, x, t, context, mask), repeat, warmup=2)
        torch_s = median_seconds(partial(eager, x, t, context, mask), repeat, warmup=2)
        row: dict[str, Any] = {
            "batch": n,
            "onnxruntime_ms": ort_s * 1e3,
            "torch_eager_ms": torch_s * 1e3,
            "speedup_vs_torch_eager": ratio(torch_s, ort_s),
            "gflop": None if flops is None else flops * n / 1e9,
        }
        if flops is not None and peak_gflops > 0:
            for name, seconds in (("onnxruntime", ort_s), ("torch_eager", torch_s)):
                rate = flops * n / seconds / 1e9
                row[f"{name}_gflops"] = rate
                row[f"{name}_fraction_of_peak"] = rate / peak_gflops
        rows.append(row)
    return {
        "parameters": spec_parameters(bundle),
        "flops_per_image": flops,
        "provider": bundle.provider_info.active,
        "torch_weights": weights,
        "rows": rows,
    }


def spec_parameters(bundle: Any) -> int | None:
    facts = json.loads((bundle.folder / "model.json").read_text()).get("unet", {})
    value = facts.get("parameters")
    return int(value) if isinstance(value, int) else None

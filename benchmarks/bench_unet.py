"""ONNX Runtime vs PyTorch eager on the same U-Net, side by side (ratios, not absolute claims).

    python benchmarks/bench_unet.py [--bundle resources/models/shapes] [--repeat 50]

Runs the bundle's unet.onnx through the app's OrtDenoiser and, when the bundle was
exported from a run that is still on disk (or with --preset), the same weights through
PyTorch eager (TorchDenoiser) at batch 1, 2 (one guided step) and 8. Also times a whole
image: DPM-Solver++ 20 steps with guidance through the app's Pipeline. Prints a table
and the ORT/PyTorch speed-up per batch size. Numbers depend on the machine's load: run
it on an idle machine and compare only ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np


def _time(fn, repeat: int) -> float:
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    from diffusion_studio.inference.bundle_loader import load_bundle
    from diffusion_studio.inference.pipeline import GenerationRequest, Pipeline
    from diffusion_studio.paths import default_model_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=default_model_dir())
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()

    bundle = load_bundle(args.bundle, device="cpu")
    spec = bundle.spec
    size = spec.image_size
    rng = np.random.default_rng(0)
    torch_model = _torch_model(bundle, args.threads)
    rows = []
    for n in (1, 2, 8):
        x = rng.standard_normal((n, spec.channels, size, size)).astype(np.float32)
        t = np.full((n,), spec.T // 2, dtype=np.int64)
        context, mask = bundle.text_encoder.encode(["a large red circle in the top left"] * n)
        ort_s = _time(partial(bundle.denoiser, x, t, context, mask), args.repeat)
        torch_s = _time(partial(torch_model, x, t, context, mask), args.repeat) if torch_model else None
        rows.append({"batch": n, "onnxruntime_ms": ort_s * 1e3,
                     "torch_eager_ms": None if torch_s is None else torch_s * 1e3,
                     "speedup": None if torch_s is None else torch_s / ort_s})
    pipeline = Pipeline(bundle)
    request = GenerationRequest(prompt="a large red circle in the top left on a black background",
                                sampler="dpmpp-2m", steps=20, seed=0)
    image_s = _time(lambda: pipeline.generate(request), max(3, args.repeat // 10))
    print(f"bundle {args.bundle} · provider {bundle.provider_info.active}")
    print(f"{'batch':>5}  {'ORT ms':>8}  {'torch ms':>9}  {'torch/ORT':>9}")
    for r in rows:
        tm = "-" if r["torch_eager_ms"] is None else f"{r['torch_eager_ms']:.2f}"
        sp = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        print(f"{r['batch']:>5}  {r['onnxruntime_ms']:>8.2f}  {tm:>9}  {sp:>9}")
    print(f"one image, DPM-Solver++ 20 steps, guidance {pipeline.resolve(request).guidance}: {image_s:.3f} s")
    print(json.dumps({"calls": rows, "image_seconds": image_s}))
    return 0


def _torch_model(bundle, threads: int):
    """The same weights in PyTorch eager, if the training run the bundle came from is on disk."""
    try:
        import torch

        from diffusion_studio.training.checkpoints import load_checkpoint
        from diffusion_studio.training.denoiser import TorchDenoiser
        from diffusion_studio.training.unet import UNet
    except ImportError:
        return None
    provenance = bundle.spec.provenance
    source = provenance.extra.get("checkpoint") or provenance.run
    if not source or not Path(source).exists():
        print("(training run not on disk: PyTorch column skipped)")
        return None
    if threads:
        torch.set_num_threads(threads)
    ckpt = load_checkpoint(Path(source))
    model = UNet(ckpt.unet_config)
    model.load_state_dict(ckpt.ema if (provenance.weights or "ema") == "ema" else ckpt.model)
    return TorchDenoiser(model.eval())


if __name__ == "__main__":
    raise SystemExit(main())

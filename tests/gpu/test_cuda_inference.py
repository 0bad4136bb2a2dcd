"""ONNX Runtime on CUDA with the shipped bundle: really on the GPU, IO binding, fp16 and its fp32 switch."""

from __future__ import annotations

import time
import warnings

import numpy as np
import onnxruntime as ort
import pytest

from diffusion_studio.inference.bundle_loader import default_bundle_path, load_bundle
from diffusion_studio.inference.providers import CUDA, create_session
from diffusion_studio.inference.session import OrtDenoiser

PROMPT = "a large red circle in the top left on a black background"


def _inputs(n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    bundle = load_bundle(None, device="cpu")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    t = np.full((n,), 500, dtype=np.int64)
    context, mask = bundle.text_encoder.encode([PROMPT] * n)
    return x, t, context, mask


def test_cuda_provider_is_really_active_without_fallback():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit cuda request that falls back warns: fail on it
        session, info = create_session(default_bundle_path() / "unet.onnx", "cuda")
    assert session.get_providers()[0] == CUDA
    assert info.on_cuda and info.fallback_reason is None
    bundle = load_bundle(None, device="cuda")
    assert bundle.provider_info.active == CUDA
    assert bundle.provider_info.fallback_reason is None


def test_cuda_output_matches_cpu():
    x, t, context, mask = _inputs(2)
    cpu = OrtDenoiser.from_file(default_bundle_path() / "unet.onnx", "cpu")(x, t, context, mask)
    gpu = OrtDenoiser.from_file(default_bundle_path() / "unet.onnx", "cuda")(x, t, context, mask)
    np.testing.assert_allclose(gpu, cpu, atol=2e-3, rtol=1e-3)  # TF32/cuDNN vs MLAS summation order


def test_io_binding_keeps_tensors_on_the_device():
    denoiser = OrtDenoiser.from_file(default_bundle_path() / "unet.onnx", "cuda")
    assert denoiser._io_binding, "IO binding is the default on CUDA"
    x, t, context, mask = _inputs(2)
    binding = denoiser.session.io_binding()
    for name, value in zip(("x", "t", "context", "context_mask"), (x, t, context, mask)):
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, "cuda", 0))
    binding.bind_output(denoiser.session.get_outputs()[0].name, "cuda", 0)
    denoiser.session.run_with_iobinding(binding)
    (out,) = binding.get_outputs()
    assert out.device_name().lower() == "cuda"  # the result was never copied to the host
    np.testing.assert_allclose(out.numpy(), denoiser(x, t, context, mask), atol=1e-4)


def test_fp16_is_chosen_on_cuda_and_switches_to_fp32_on_non_finite_output():
    bundle = load_bundle(None, device="cuda")
    if not bundle.spec.unet_fp16_file:
        pytest.skip("the shipped bundle declares no fp16 U-Net")
    assert bundle.provider_info.model_file == bundle.spec.unet_fp16_file
    x, t, context, mask = _inputs(1)
    normal = bundle.denoiser(x, t, context, mask)
    assert np.all(np.isfinite(normal)) and bundle.provider_info.model_file == bundle.spec.unet_fp16_file
    huge = x * 1e6  # beyond fp16's 65504: the fp16 graph's activations become Inf/NaN
    with pytest.warns(RuntimeWarning, match="switched"):
        out = bundle.denoiser(huge, t, context, mask)
    assert np.all(np.isfinite(out))
    assert bundle.provider_info.model_file == bundle.spec.unet_file
    assert "switched" in (bundle.provider_info.note or "")


def test_batch_64_throughput_beats_the_cpu():
    x, t, context, mask = _inputs(64)
    gpu = OrtDenoiser.from_file(default_bundle_path() / "unet.onnx", "cuda")
    cpu = OrtDenoiser.from_file(default_bundle_path() / "unet.onnx", "cpu")

    def images_per_s(denoiser: OrtDenoiser, repeat: int) -> float:
        denoiser(x, t, context, mask)
        start = time.perf_counter()
        for _ in range(repeat):
            out = denoiser(x, t, context, mask)
        assert np.all(np.isfinite(out))
        return 64 * repeat / (time.perf_counter() - start)

    gpu_rate, cpu_rate = images_per_s(gpu, 20), images_per_s(cpu, 2)
    print(f"batch 64: CUDA {gpu_rate:.0f} images/s, CPU {cpu_rate:.0f} images/s")
    assert gpu_rate > 2 * cpu_rate

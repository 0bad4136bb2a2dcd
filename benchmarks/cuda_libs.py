"""Does onnxruntime-gpu find what its CUDA provider needs? `python -m benchmarks.cuda_libs [--out F.json]`.

Calls `onnxruntime.preload_dlls()` (which looks for pip's CUDA wheels beside onnxruntime, in
site-packages/nvidia/cu13/lib and nvidia/cudnn/lib), then loads each library the provider links
against and the provider itself, and says which one is missing. libcuda.so.1 is the NVIDIA
driver: only a machine with an NVIDIA GPU has it, no pip package brings it.

Verified on a machine without a GPU (onnxruntime-gpu 1.31.1, CUDA 13.0 build): with
`pip install nvidia-cuda-runtime nvidia-cublas nvidia-curand nvidia-cudnn-cu13` every library
loaded and only the driver was missing. The older names `nvidia-cuda-runtime-cu13` etc. are
deprecated stubs that refuse to build, and cuDNN's wheel does not pull in cuRAND.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import json
import sys
from pathlib import Path
from typing import Any

# What onnxruntime-gpu 1.31's CUDA provider links against (readelf -d), besides libc and friends.
LIBRARIES = ("libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10", "libcudnn.so.9")
DRIVER = "libcuda.so.1"
PIP_PACKAGES = ("nvidia-cuda-runtime", "nvidia-cublas", "nvidia-curand", "nvidia-cudnn-cu13")


def check() -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return {"onnxruntime": None, "error": str(exc)}
    try:
        from onnxruntime.capi import build_and_package_info as build

        cuda_build = getattr(build, "cuda_version", None)
    except ImportError:
        cuda_build = None
    captured = io.StringIO()
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            try:
                preload()
            except Exception as exc:  # noqa: BLE001 - reported below
                print(f"preload_dlls raised {exc}")
    libraries = {}
    for name in (*LIBRARIES, DRIVER):
        try:
            ctypes.CDLL(name)
            libraries[name] = "loaded"
        except OSError as exc:
            libraries[name] = f"missing: {exc}"
    provider = Path(ort.__file__).resolve().parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not provider.exists():
        provider_state = "this onnxruntime has no CUDA provider library (install onnxruntime-gpu)"
    else:
        try:
            ctypes.CDLL(str(provider))
            provider_state = "loaded"
        except OSError as exc:
            provider_state = f"not loadable: {exc}"
    from diffusion_studio.inference.providers import cuda_unusable_reason

    return {
        "onnxruntime": ort.__version__,
        "cuda_build": cuda_build,
        "available_providers": list(ort.get_available_providers()),
        "preload_messages": captured.getvalue().strip().splitlines(),
        "libraries": libraries,
        "provider_library": provider_state,
        "cuda_unusable_reason": cuda_unusable_reason(),
        "pip_packages": list(PIP_PACKAGES),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cuda_libs", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = check()
    text = json.dumps(result, indent=2)
    if args.out is not None:
        from diffusion_studio.core.files import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0 if result.get("provider_library") == "loaded" else 1


if __name__ == "__main__":
    sys.exit(main())

"""The CUDA library check and the fallback reason's install hint (runs without a GPU)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import cuda_libs  # noqa: E402
from diffusion_studio.inference import providers  # noqa: E402


def test_missing_library_names_its_wheel():
    hint = providers._missing_library_hint("libcurand.so.10: cannot open shared object file")
    assert hint == ("; pip install nvidia-cuda-runtime nvidia-cublas nvidia-curand nvidia-cudnn-cu13"
                    " (missing: nvidia-curand)")
    assert "missing: nvidia-cublas" in providers._missing_library_hint("libcublasLt.so.13: cannot open")
    assert "driver" in providers._missing_library_hint("libcuda.so.1: cannot open shared object file")
    assert providers._missing_library_hint("something else") == ""
    assert set(providers._LIBRARY_WHEELS.values()) == set(cuda_libs.PIP_PACKAGES)


def test_check_reports_every_library_the_provider_links():
    result = cuda_libs.check()
    assert result["onnxruntime"]
    assert list(result["libraries"]) == [*cuda_libs.LIBRARIES, cuda_libs.DRIVER]
    for state in result["libraries"].values():
        assert state == "loaded" or state.startswith("missing: ")
    loaded = result["provider_library"] == "loaded"
    if not all(state == "loaded" for state in result["libraries"].values()):
        assert not loaded  # the provider links every one of them
    if result["cuda_unusable_reason"] is None:  # a machine where CUDA works
        assert loaded

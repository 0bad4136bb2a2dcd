"""GPU tests: marked `gpu`, skipped with the reason when the CUDA provider or torch CUDA is absent.

Run them on a machine with an NVIDIA GPU: `pytest -m gpu tests/gpu` (benchmarks/gpu_check.sh
installs onnxruntime-gpu with the CUDA 13 / cuDNN 9 pip packages first).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def ort_cuda_missing() -> str | None:
    """Why ONNX Runtime's CUDA execution provider cannot run here, or None."""
    from diffusion_studio.inference.providers import cuda_unusable_reason

    return cuda_unusable_reason()


@functools.lru_cache(maxsize=1)
def torch_cuda_missing() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    return None if torch.cuda.is_available() else f"torch {torch.__version__} sees no CUDA device"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in Path(str(item.fspath)).resolve().parents:
            continue
        item.add_marker(pytest.mark.gpu)
        needs_torch = item.get_closest_marker("torch_cuda") is not None
        reason = ort_cuda_missing() or (torch_cuda_missing() if needs_torch else None)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"no CUDA here: {reason}"))

"""The machine a benchmark ran on (CPU, cores, load, versions, providers) and its matmul peak."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import median_seconds

PACKAGES = ("diffusion-studio", "numpy", "onnxruntime", "onnxruntime-gpu", "torch", "diffusers", "PySide6")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD extensions that matter for matmul speed (from /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                wanted = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
                return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def machine_info() -> dict[str, Any]:
    """CPU, cores, load average, package versions and ONNX Runtime providers of this process."""
    from diffusion_studio.inference.providers import physical_cores

    try:
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
    except ImportError:
        providers = []
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "physical_cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_average_at_start": load,
        "versions": versions(),
        "onnxruntime_providers": providers,
    }


def matmul_peak_gflops(size: int = 512, repeat: int = 5) -> dict[str, float]:
    """float32 matmul throughput of this machine (numpy's BLAS, all cores): 2·n³ FLOPs per product.

    The ceiling a conv/attention network can approach on the same cores; a network's GFLOP/s
    divided by it is the fraction of the machine it uses.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    seconds = median_seconds(lambda: a @ b, repeat, warmup=2)
    return {"size": size, "seconds": seconds, "gflops": 2 * size**3 / seconds / 1e9}

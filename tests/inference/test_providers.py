"""Provider choice: CPU when asked, honest fallback reasons when CUDA cannot be used."""

from __future__ import annotations

import os
import time
import warnings

import onnxruntime as ort
import pytest

from diffusion_studio.errors import UsageError
from diffusion_studio.inference import providers
from diffusion_studio.inference.providers import CPU, CUDA, ProviderInfo, create_session


def test_cpu_request_runs_on_cpu_without_reason(tiny_bundle):
    session, info = create_session(tiny_bundle / "unet.onnx", "cpu")
    assert session.get_providers() == [CPU]
    assert info == ProviderInfo("cpu", CPU, None, ort.__version__, "unet.onnx")
    assert info.device_label == "CPU"
    assert info.describe() == f"{CPU} (onnxruntime {ort.__version__}), unet.onnx"


@pytest.mark.skipif(providers.cuda_unusable_reason() is None, reason="a usable CUDA provider is present")
def test_cuda_request_falls_back_to_cpu_with_warning_and_reason(tiny_bundle):
    start = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="CUDA was requested but the model runs on the CPU"):
        session, info = create_session(tiny_bundle / "unet.onnx", "cuda")
    assert time.perf_counter() - start < 5.0
    assert session.get_providers()[0] == CPU
    assert info.requested == "cuda" and info.active == CPU
    assert info.fallback_reason and len(info.fallback_reason) > 10
    assert "fell back" in info.describe() and info.fallback_reason in info.describe()


@pytest.mark.skipif(CUDA not in ort.get_available_providers() or providers.cuda_unusable_reason() is None,
                    reason="needs a CUDA provider that is listed but cannot load (this CI machine)")
def test_auto_with_listed_but_unloadable_cuda_ends_on_cpu_with_reason(tiny_bundle):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto does not warn; it reports through ProviderInfo
        session, info = create_session(tiny_bundle / "unet.onnx", "auto")
    assert session.get_providers()[0] == CPU
    assert info.requested == "auto"
    assert info.fallback_reason == providers.cuda_unusable_reason()
    assert "CUDA provider could not be loaded" in info.fallback_reason
    assert providers.available_devices() == ("auto", "cpu")


def test_session_options_are_deliberate():
    opts = providers.session_options()
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.intra_op_num_threads == providers.physical_cores()
    assert 1 <= providers.physical_cores() <= (os.cpu_count() or 1)
    assert opts.enable_mem_pattern
    assert providers.session_options(intra_op_threads=1).intra_op_num_threads == 1


def test_cuda_options_avoid_exhaustive_cudnn_search():
    options = providers.cuda_provider_options()
    assert options["cudnn_conv_algo_search"] == "HEURISTIC"
    assert options["arena_extend_strategy"] == "kSameAsRequested"


@pytest.mark.parametrize("device", ["gpu", "", "CUDA:0"])
def test_unknown_device_is_a_usage_error(device):
    with pytest.raises(UsageError, match="Unknown device"):
        providers.check_device(device)
    assert providers.check_device(" CPU ") == "cpu"

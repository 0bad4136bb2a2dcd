"""OrtDenoiser: parity with the torch module, IO binding, cancellation, fp16 -> fp32 fallback."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from diffusion_studio.errors import Cancelled
from diffusion_studio.inference.providers import create_session
from diffusion_studio.inference.session import OrtDenoiser


def _inputs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
    t = rng.integers(1, 51, size=n).astype(np.int64)
    context = rng.standard_normal((n, 8, 384)).astype(np.float32)
    mask = np.zeros((n, 8), np.float32)
    mask[:, :3] = 1.0  # three real tokens, then padding
    return x, t, context, mask


def _torch_eps(module, x, t, context, mask) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(*(torch.from_numpy(a) for a in (x, t, context, mask))).numpy()


def _graph_with_unet_inputs(nodes, output, initializers=(), x_shape=("N", 3, 8, 8)) -> bytes:
    """An onnx.helper graph with the U-Net's four named inputs and an `eps` output."""
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape)),
        helper.make_tensor_value_info("t", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("context", TensorProto.FLOAT, ["N", 8, 384]),
        helper.make_tensor_value_info("context_mask", TensorProto.FLOAT, ["N", 8]),
    ]
    graph = helper.make_graph(nodes, "g", inputs, [output], initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture
def denoiser(tiny_bundle) -> OrtDenoiser:
    return OrtDenoiser.from_file(tiny_bundle / "unet.onnx", "cpu")


@pytest.mark.parametrize("n", [1, 3])
def test_ort_denoiser_matches_torch(denoiser, tiny_unet, n):
    x, t, context, mask = _inputs(n, seed=n)
    eps = denoiser(x, t, context, mask)
    assert eps.dtype == np.float32 and eps.shape == x.shape
    np.testing.assert_allclose(eps, _torch_eps(tiny_unet, x, t, context, mask), atol=1e-5, rtol=0)
    assert denoiser.provider_info.active == "CPUExecutionProvider"


def test_io_binding_path_gives_the_same_eps(tiny_bundle, denoiser):
    session, info = create_session(tiny_bundle / "unet.onnx", "cpu")
    bound = OrtDenoiser(session, info, use_io_binding=True)  # the CUDA code path, on CPU memory
    x, t, context, mask = _inputs(2, seed=7)
    np.testing.assert_array_equal(bound(x, t, context, mask), denoiser(x, t, context, mask))


def test_inputs_are_cast_to_the_graph_dtypes(denoiser, tiny_unet):
    x, t, context, mask = _inputs(2, seed=3)
    eps = denoiser(x.astype(np.float64), t.astype(np.int32), context, mask.astype(np.float64))
    np.testing.assert_allclose(eps, _torch_eps(tiny_unet, x, t, context, mask), atol=1e-5, rtol=0)


def test_cancel_terminates_the_call_in_flight_and_next_call_runs():
    # 1000 chained 512x512 matmuls (~1 s on one core): still running when cancel() arrives.
    weight = numpy_helper.from_array(np.full((512, 512), 1.0 / 512, np.float32), "w")
    nodes, previous = [], "x"
    for k in range(1000):
        nodes.append(helper.make_node("MatMul", [previous, "w"], [f"y{k}"]))
        previous = f"y{k}"
    nodes.append(helper.make_node("Identity", [previous], ["eps"]))
    output = helper.make_tensor_value_info("eps", TensorProto.FLOAT, ["N", 1, "H", 512])
    model = _graph_with_unet_inputs(nodes, output, [weight], x_shape=("N", 1, "H", 512))
    session, info = create_session(model, "cpu", intra_op_threads=1)
    slow = OrtDenoiser(session, info)
    x = np.ones((1, 1, 512, 512), np.float32)
    _, t, context, mask = _inputs(1)

    slow.cancel()  # nothing in flight: must not poison the next call
    outcome: dict[str, object] = {}

    def work() -> None:
        start = time.perf_counter()
        try:
            outcome["eps"] = slow(x, t, context, mask)
        except Cancelled as exc:
            outcome["cancelled"] = exc
        outcome["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=work)
    thread.start()
    deadline = time.perf_counter() + 10
    while slow._in_flight is None and time.perf_counter() < deadline:  # wait until the run started
        time.sleep(0.001)
    time.sleep(0.02)
    slow.cancel()
    thread.join(timeout=30)
    assert "cancelled" in outcome, f"the run finished instead of stopping ({outcome.get('seconds')} s)"
    assert outcome["seconds"] < 2.0

    one_row = np.ones((1, 1, 1, 512), np.float32)
    eps = slow(one_row, t, context, mask)  # a fresh RunOptions: runs to completion
    np.testing.assert_allclose(eps, one_row, rtol=1e-4)  # rows of 1/512 keep ones at one


def test_fp16_nan_output_switches_to_fp32_and_says_so(tiny_bundle, tiny_unet):
    # A stand-in "fp16" graph that overflows: eps = x * inf * 0 = NaN.
    nodes = [
        helper.make_node("Constant", [], ["inf"], value=numpy_helper.from_array(np.array(np.inf, np.float32))),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0.0, np.float32))),
        helper.make_node("Mul", ["x", "inf"], ["big"]),
        helper.make_node("Mul", ["big", "zero"], ["eps"]),
    ]
    output = helper.make_tensor_value_info("eps", TensorProto.FLOAT, ["N", 3, 8, 8])
    broken, broken_info = create_session(_graph_with_unet_inputs(nodes, output), "cpu")
    broken_info = broken_info.__class__(**{**broken_info.__dict__, "model_file": "unet.fp16.onnx"})
    opened: list[str] = []

    def open_fp32():
        opened.append("unet.onnx")
        return create_session(tiny_bundle / "unet.onnx", "cpu")

    denoiser = OrtDenoiser(broken, broken_info, fp32_fallback=open_fp32)
    x, t, context, mask = _inputs(2, seed=11)
    with pytest.warns(RuntimeWarning, match="unet.fp16.onnx produced NaN/Inf, switched to unet.onnx"):
        eps = denoiser(x, t, context, mask)
    np.testing.assert_allclose(eps, _torch_eps(tiny_unet, x, t, context, mask), atol=1e-5, rtol=0)
    assert denoiser.provider_info.model_file == "unet.onnx"
    assert "switched to unet.onnx" in denoiser.provider_info.note
    denoiser(x, t, context, mask)
    assert opened == ["unet.onnx"]  # switched once, stays on fp32

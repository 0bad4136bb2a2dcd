"""The fp16 U-Net: float32 at the boundaries, float16 inside, float32 where fp16 breaks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from exporter.fp16 import FP32_OPS, convert_to_fp16

F, H = TensorProto.FLOAT, TensorProto.FLOAT16


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def _model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model)
    return model


def test_timestep_embedding_stays_float32():
    """sin(t·freq) for t near 1000: fp16 spaces numbers 0.5 apart there, so this path must stay fp32."""
    freqs = np.array([0.7, 0.31, 0.013, 0.0011], dtype=np.float32)
    model = _model(
        [helper.make_node("Cast", ["t"], ["tf"], to=F),
         helper.make_node("Unsqueeze", ["tf", "axis"], ["t2"]),
         helper.make_node("Mul", ["t2", "freqs"], ["arg"]),
         helper.make_node("Sin", ["arg"], ["emb"]),
         helper.make_node("Add", ["x", "emb"], ["eps"])],
        [helper.make_tensor_value_info("x", F, ["N", 4]), helper.make_tensor_value_info("t", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("eps", F, ["N", 4])],
        [numpy_helper.from_array(freqs, "freqs"), numpy_helper.from_array(np.array([1], np.int64), "axis")],
    )
    half = convert_to_fp16(model)
    t = np.array([1, 500, 999, 1000], dtype=np.int64)
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4)
    exact = x + np.sin(t[:, None].astype(np.float64) * freqs.astype(np.float64))
    assert np.abs(_run(model, {"x": x, "t": t}) - exact).max() < 1e-4
    assert np.abs(_run(half, {"x": x, "t": t}) - exact).max() < 2e-3  # fp16 rounding of the sum only
    # What a naive conversion would have computed: t·freq rounded to fp16 first.
    naive = x + np.sin((t[:, None].astype(np.float16) * freqs.astype(np.float16)).astype(np.float64))
    assert np.abs(naive - exact).max() > 0.05
    types = _types(half)
    assert types["arg"] == F and types["emb"] == F  # the t path
    assert [v.type.tensor_type.elem_type for v in half.graph.output] == [F]
    add = next(n for n in half.graph.node if n.op_type == "Add")
    assert types[add.output[0]] == H  # the image path runs in fp16


def test_padding_mask_bias_saturates_instead_of_inf():
    """(1 − mask)·(−1e9) overflows fp16; it is clipped to −65504 and softmax stays exact."""
    model = _model(
        [helper.make_node("MatMul", ["x", "k"], ["logits"]),
         helper.make_node("Sub", ["one", "mask"], ["pad"]),
         helper.make_node("Mul", ["pad", "big"], ["bias"]),
         helper.make_node("Add", ["logits", "bias"], ["biased"]),
         helper.make_node("Softmax", ["biased"], ["eps"], axis=-1)],
        [helper.make_tensor_value_info("x", F, ["N", 4]), helper.make_tensor_value_info("mask", F, ["N", 6])],
        [helper.make_tensor_value_info("eps", F, ["N", 6])],
        [numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32), "k"),
         numpy_helper.from_array(np.array(1.0, np.float32), "one"),
         numpy_helper.from_array(np.array(-1e9, np.float32), "big")],
    )
    half = convert_to_fp16(model)
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    mask = (np.arange(6)[None] < np.array([[1], [3], [6]])).astype(np.float32)
    want, got = _run(model, {"x": x, "mask": mask}), _run(half, {"x": x, "mask": mask})
    assert np.all(np.isfinite(got))
    assert np.abs(got - want).max() < 2e-3
    assert np.all(got[mask == 0] == 0.0)  # padding gets exactly zero attention
    types = _types(half)
    softmax = next(n for n in half.graph.node if n.op_type == "Softmax")
    assert types[softmax.input[0]] == F  # softmax computes in fp32


def test_resize_scales_stay_float32_and_big_weights_become_fp16():
    w = np.random.default_rng(2).standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.1
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
         helper.make_node("Resize", ["h", "", "scales"], ["eps"], mode="nearest")],
        [helper.make_tensor_value_info("x", F, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("eps", F, ["N", 8, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")],
    )
    half = convert_to_fp16(model)
    inits = {i.name: i.data_type for i in half.graph.initializer}
    assert inits["w"] == H and inits["scales"] == F
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 4)).astype(np.float32)
    assert np.abs(_run(half, {"x": x}) - _run(model, {"x": x})).max() < 1e-2


def test_local_functions_are_inlined_in_a_fresh_interpreter(tmp_path):
    """The dynamo exporter emits local functions; they are inlined also where torch never loaded onnx.inliner."""
    fn = helper.make_function("local", "f", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
                              [helper.make_opsetid("", 18)])
    x, y = helper.make_tensor_value_info("x", F, [2]), helper.make_tensor_value_info("y", F, [2])
    graph = helper.make_graph([helper.make_node("f", ["x"], ["y"], domain="local")], "g", [x], [y])
    model = helper.make_model(graph, functions=[fn], ir_version=10,
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)])
    path = tmp_path / "functions.onnx"
    onnx.save(model, path)
    code = ("import sys, onnx; from exporter.fp16 import convert_to_fp16; "
            "m = convert_to_fp16(onnx.load(sys.argv[1])); print(len(m.functions), [n.op_type for n in m.graph.node])")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(maxsplit=1)[0] == "0" and "Relu" in done.stdout


def test_bundle_fp16_file_is_produced_and_declared(ema_export, tiny_config):
    bundle, _ = ema_export
    raw = json.loads((bundle / "model.json").read_text())
    assert raw["unet"]["fp16_file"] == "unet.fp16.onnx" and "unet.fp16.onnx" in raw["files"]
    half = onnx.load(str(bundle / "unet.fp16.onnx"))
    onnx.checker.check_model(half, full_check=True)
    assert [v.type.tensor_type.elem_type for v in half.graph.input] == [F, TensorProto.INT64, F, F]
    assert [v.type.tensor_type.elem_type for v in half.graph.output] == [F]
    sizes = {H: 0, F: 0}
    for init in half.graph.initializer:
        if init.data_type in sizes:
            sizes[init.data_type] += int(np.prod(init.dims))
    assert sizes[H] > 0.95 * (sizes[H] + sizes[F])  # the weights are stored as fp16
    assert (bundle / "unet.fp16.onnx").stat().st_size < 0.75 * (bundle / "unet.onnx").stat().st_size
    types = _types(half)
    sensitive = [n for n in half.graph.node if n.op_type in FP32_OPS]
    assert any(n.op_type == "Softmax" for n in sensitive)
    assert any(n.op_type == "InstanceNormalization" for n in sensitive)  # GroupNorm's export
    assert all(types[n.input[0]] == F for n in sensitive)
    assert sum(types.get(n.output[0]) == H for n in half.graph.node if n.op_type == "Conv") >= 10
    meta = {p.key: p.value for p in half.metadata_props}
    assert meta["diffusion_studio.precision"].startswith("fp16")


def test_bundle_fp16_runs_finite_and_close_to_fp32(ema_export, tiny_config, fixed_inputs):
    bundle, _ = ema_export
    fp32 = ort.InferenceSession(str(bundle / "unet.onnx"), providers=["CPUExecutionProvider"])
    fp16 = ort.InferenceSession(str(bundle / "unet.fp16.onnx"), providers=["CPUExecutionProvider"])
    names = ("x", "t", "context", "context_mask")
    want = fp32.run(None, dict(zip(names, fixed_inputs)))[0]
    got = fp16.run(None, dict(zip(names, fixed_inputs)))[0]
    assert got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-2 * max(1.0, float(np.abs(want).max()))
    # Every timestep of the schedule gives a finite output.
    x, _, context, mask = fixed_inputs
    T = tiny_config.T
    t = np.arange(1, T + 1, dtype=np.int64)
    feeds = {"x": np.resize(x, (T, *x.shape[1:])), "t": t,
             "context": np.resize(context, (T, *context.shape[1:])),
             "context_mask": np.resize(mask, (T, mask.shape[1]))}
    assert np.all(np.isfinite(fp16.run(None, feeds)[0]))
    report = json.loads((bundle / "validation.json").read_text())
    entry = next(e for e in report["network"] if e["file"] == "unet.fp16.onnx")
    assert entry["gated"] is False and entry["fp16_finite"] == {"timesteps_checked": T, "finite": True,
                                                                 "non_finite_timesteps": []}

"""float32 ONNX U-Net -> mixed-precision graph with float32 inputs and outputs.

Rules (why the fp16 file never gives black images):

1. Only nodes downstream of the image input `x` run in float16; the timestep embedding
   (sin/cos of t·freq, where t·freq reaches ~10³ and fp16 has a 0.5 ulp there), the text
   context projections and the mask arithmetic stay float32. They are tiny.
2. Numerically sensitive ops (normalisations, softmax, reductions, exp/log/pow/sqrt) run
   in float32 even on the image path: a Cast up before and a Cast down after.
3. Graph inputs and outputs keep float32; Casts sit at the boundaries.
4. A weight is stored as float16 when every consumer computes in float16 or when it is
   large (≥ 1024 elements; a Cast up feeds its float32 consumers, which ONNX Runtime folds
   at load); small float32-path constants stay float32.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
import onnx.inliner  # a submodule `import onnx` does not load
from onnx import TensorProto, helper, numpy_helper

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

LARGE_WEIGHT = 1024  # elements; larger float32-path weights are stored as float16 (rule 4)
# Kept in float32 on the image path (rule 2).
FP32_OPS = frozenset(
    {
        "BatchNormalization",
        "GroupNormalization",
        "InstanceNormalization",
        "LayerNormalization",
        "Softmax",
        "LogSoftmax",
        "ReduceMean",
        "ReduceSum",
        "ReduceSumSquare",
        "ReduceL2",
        "Exp",
        "Log",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Sin",
        "Cos",
    }
)
# Inputs whose type is float32 by the operator's definition, whatever the data type.
FP32_INPUTS = frozenset({("Resize", 1), ("Resize", 2), ("Upsample", 1)})
# Ops whose output type is an attribute; only Cast and ConstantOfShape are handled.
_TYPE_ATTR_OPS = frozenset({"EyeLike", "RandomNormal", "RandomNormalLike", "RandomUniform",
                            "RandomUniformLike", "Multinomial", "Bernoulli"})


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = inferred.graph
    types: dict[str, int] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    return types


def _check_supported(graph: onnx.GraphProto) -> None:
    for node in graph.node:
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise RuntimeError(f"fp16 conversion does not handle control flow ({node.op_type}).")
        if node.domain not in ("", "ai.onnx"):
            raise RuntimeError(f"fp16 conversion does not handle the custom op {node.domain}::{node.op_type}.")


def _half_constant(node: onnx.NodeProto) -> None:
    """Turn a float Constant / ConstantOfShape value into float16 in place."""
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type == FLOAT:
            array = numpy_helper.to_array(attr.t).astype(np.float16)
            attr.t.CopyFrom(numpy_helper.from_array(array, attr.t.name))
        elif attr.name == "value_float":
            tensor = numpy_helper.from_array(np.array(attr.f, dtype=np.float16))
            node.attribute.remove(attr)
            node.attribute.append(helper.make_attribute("value", tensor))
            return
        elif attr.name == "value_floats":
            tensor = numpy_helper.from_array(np.array(list(attr.floats), dtype=np.float16))
            node.attribute.remove(attr)
            node.attribute.append(helper.make_attribute("value", tensor))
            return


_FP16_MAX = float(np.finfo(np.float16).max)
_RANGE_NAMES = ("fp16_conversion__min", "fp16_conversion__max")


def _fp16_range(graph: onnx.GraphProto) -> tuple[str, str]:
    """Names of two float32 scalar initializers holding −65504 and 65504 (added once)."""
    if not any(init.name == _RANGE_NAMES[0] for init in graph.initializer):
        for name, value in zip(_RANGE_NAMES, (-_FP16_MAX, _FP16_MAX)):
            graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.float32), name))
    return _RANGE_NAMES


def convert_to_fp16(model: onnx.ModelProto, image_input: str = "x") -> onnx.ModelProto:
    """A mixed-precision copy of `model` (rules in the module docstring); inputs/outputs stay float32."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    graph = model.graph
    _check_supported(graph)
    types = _elem_types(model)
    is_float = lambda name: bool(name) and types.get(name) == FLOAT  # noqa: E731

    # Rule 1: which nodes depend on the image input.
    tainted = {image_input}
    half_nodes: set[int] = set()
    for i, node in enumerate(graph.node):
        if any(name in tainted for name in node.input):
            tainted.update(node.output)
            if node.op_type not in FP32_OPS:
                if node.op_type in _TYPE_ATTR_OPS:
                    raise RuntimeError(f"fp16 conversion does not handle {node.op_type}.")
                half_nodes.add(i)

    # Where each float tensor is read and in which precision (rules 2-3).
    wants: dict[str, set[int]] = defaultdict(set)
    for i, node in enumerate(graph.node):
        for k, name in enumerate(node.input):
            if is_float(name):
                half = i in half_nodes and (node.op_type, k) not in FP32_INPUTS
                wants[name].add(HALF if half else FLOAT)
    outputs = {o.name for o in graph.output}
    for name in outputs:
        wants[name].add(FLOAT)

    # Precision each float tensor is produced in (rule 4 for weights and constants).
    produced: dict[str, int] = {o.name: FLOAT for o in graph.input}
    flexible = {init.name for init in graph.initializer}
    for i, node in enumerate(graph.node):
        for name in node.output:
            if not is_float(name):
                continue
            if node.op_type == "Constant":
                flexible.add(name)
            produced[name] = HALF if i in half_nodes else FLOAT
    large = {init.name for init in graph.initializer if int(np.prod(init.dims)) >= LARGE_WEIGHT}
    for name in flexible:
        if is_float(name):
            produced[name] = HALF if wants.get(name) == {HALF} or name in large else FLOAT

    for init in graph.initializer:
        if is_float(init.name) and produced[init.name] == HALF:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))

    # Graph outputs produced in fp16: rename inside the graph, Cast back at the end.
    renamed = {name: f"{name}__fp16" for name in outputs if produced.get(name) == HALF}
    for node in graph.node:
        node.input[:] = [renamed.get(n, n) for n in node.input]
        node.output[:] = [renamed.get(n, n) for n in node.output]
    for new in renamed.values():
        produced[new] = HALF

    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def read_as(name: str, precision: int) -> str:
        source = renamed.get(name, name)
        if produced.get(source, precision) == precision:
            return source
        key = (source, precision)
        if key not in casts:
            target = casts[key] = f"{source}__to_{'fp16' if precision == HALF else 'fp32'}"
            if precision == HALF and source not in tainted:
                # Off the image path values such as the −1e9 mask bias exceed fp16's range:
                # saturate to ±65504 instead of turning into ±inf.
                clipped = f"{source}__clipped"
                new_nodes.append(helper.make_node("Clip", [source, *_fp16_range(graph)], [clipped],
                                                  name=f"clip_{source}"))
                source = clipped
            new_nodes.append(helper.make_node("Cast", [source], [target], to=precision,
                                              name=f"cast_{target}"))
        return casts[key]

    for i, node in enumerate(graph.node):
        half = i in half_nodes
        for k, name in enumerate(node.input):
            if is_float(name) or name in renamed.values():
                need = HALF if half and (node.op_type, k) not in FP32_INPUTS else FLOAT
                node.input[k] = read_as(name, need)
        if half and node.op_type == "Cast":
            for attr in node.attribute:
                if attr.name == "to" and attr.i == FLOAT:
                    attr.i = HALF
        if (half and node.op_type == "ConstantOfShape") or (
            node.op_type == "Constant" and node.output[0] in produced and produced[node.output[0]] == HALF
        ):
            _half_constant(node)
        new_nodes.append(node)
    for old, new in renamed.items():
        new_nodes.append(helper.make_node("Cast", [new], [old], to=FLOAT, name=f"cast_{old}_out"))

    del graph.node[:]
    graph.node.extend(new_nodes)
    # Keep the known value types (shape inference cannot see through every function op, e.g.
    # GroupNormalization-21), updated to the precision each tensor is now produced in.
    for vi in graph.value_info:
        if vi.name in produced and types.get(vi.name) == FLOAT:
            vi.type.tensor_type.elem_type = produced[vi.name]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model

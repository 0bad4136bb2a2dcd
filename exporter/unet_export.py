"""PyTorch U-Net -> ONNX (`unet.onnx`, optional `unet.fp16.onnx`), checked and labelled.

Graph contract (docs/architecture.md): inputs x float32 [N,C,H,W], t int64 [N],
context float32 [N,L,D], context_mask float32 [N,L]; output eps float32 [N,C,H,W];
only N is dynamic. The current torch.onnx exporter (`dynamo=True`, torch.export +
onnxscript) is tried first; the TorchScript exporter only when it fails, and the
reason is kept for model.json provenance.

Imported diffusers U-Nets (exporter.diffusers_import) use the graphs of the other conditioning
kinds: x, t [, class_labels int64 [N]] -> model_output [N, C or 2C, H, W]; `GraphSpec.kind`
selects them.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from diffusion_studio.core.files import atomic_write_bytes
from exporter.fp16 import convert_to_fp16

INPUT_NAMES = ("x", "t", "context", "context_mask")
OUTPUT_NAME = "eps"
MODEL_OUTPUT_NAME = "model_output"  # the output of class / none graphs (as inference.session)
BATCH_DIM = "N"
SPATIAL_DIMS = ("H", "W")  # the latent U-Net's dynamic height and width (GraphSpec.dynamic_hw)
DYNAMO, TORCHSCRIPT = "torch.onnx dynamo", "torch.onnx torchscript"
MIN_OPSET = 17
_FLOAT, _INT64, _HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.FLOAT16


@dataclass(frozen=True)
class GraphSpec:
    """The fixed (non-batch) dimensions of the exported graph."""

    channels: int
    image_size: int
    max_tokens: int = 0
    context_dim: int = 0
    kind: str = "text"  # model.json conditioning.kind: text, class or none; "latent": x, t, context (no mask)
    out_channels: int | None = None  # None: `channels` (2C with a learned variance)
    dynamic_hw: bool = False  # latent U-Nets: H and W are dynamic axes "H", "W" too (any multiple of the factor)

    @property
    def input_names(self) -> tuple[str, ...]:
        return {"text": INPUT_NAMES, "class": ("x", "t", "class_labels"),
                "latent": ("x", "t", "context")}.get(self.kind, ("x", "t"))

    @property
    def output_name(self) -> str:
        return OUTPUT_NAME if self.kind == "text" else MODEL_OUTPUT_NAME

    def shapes(self) -> dict[str, tuple[tuple[str | int, ...], int]]:
        """name -> (shape with "N" for the batch axis, ONNX elem type)."""
        c, L, d = self.channels, self.max_tokens, self.context_dim
        h: str | int = SPATIAL_DIMS[0] if self.dynamic_hw else self.image_size
        w: str | int = SPATIAL_DIMS[1] if self.dynamic_hw else self.image_size
        every: dict[str, tuple[tuple[str | int, ...], int]] = {
            "x": ((BATCH_DIM, c, h, w), _FLOAT),
            "t": ((BATCH_DIM,), _INT64),
            "context": ((BATCH_DIM, L, d), _FLOAT),
            "context_mask": ((BATCH_DIM, L), _FLOAT),
            "class_labels": ((BATCH_DIM,), _INT64),
        }
        shapes = {name: every[name] for name in self.input_names}
        shapes[self.output_name] = ((BATCH_DIM, self.out_channels or c, h, w), _FLOAT)
        return shapes

    def dynamic_axes(self, name: str) -> dict[int, str]:
        """The TorchScript exporter's dynamic axes of input or output `name`."""
        if self.dynamic_hw and name in ("x", self.output_name):
            return {0: BATCH_DIM, 2: SPATIAL_DIMS[0], 3: SPATIAL_DIMS[1]}
        return {0: BATCH_DIM}


@dataclass(frozen=True)
class ExportInfo:
    exporter: str  # DYNAMO or TORCHSCRIPT
    opset: int
    fallback_reason: str | None  # why the dynamo exporter was not used


@functools.lru_cache(maxsize=1)
def max_opset() -> int:
    """The newest ai.onnx opset that both this onnx package and onnxruntime's CPU provider accept."""
    import onnxruntime as ort
    from onnx import helper

    value = helper.make_tensor_value_info("v", onnx.TensorProto.FLOAT, [1])
    for version in range(int(onnx.defs.onnx_opset_version()), MIN_OPSET, -1):
        graph = helper.make_graph([helper.make_node("Identity", ["v"], ["w"])], "probe", [value],
                                  [helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", version)], ir_version=8)
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - "opset too new" is what we are probing for
            continue
        return version
    return MIN_OPSET


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Keep the exporters' progress prints, warnings and logs out of our stdout/stderr."""
    buffer = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buffer):
            warnings.simplefilter("ignore")
            yield buffer
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _example_inputs(spec: GraphSpec, batch: int = 2) -> tuple:
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, spec.channels, spec.image_size, spec.image_size, generator=gen)
    t = torch.arange(1, batch + 1, dtype=torch.int64)
    if spec.kind == "class":
        return x, t, torch.zeros(batch, dtype=torch.int64)
    if spec.kind not in ("text", "latent"):
        return x, t
    context = torch.randn(batch, spec.max_tokens, spec.context_dim, generator=gen)
    if spec.kind == "latent":
        return x, t, context
    mask = torch.ones(batch, spec.max_tokens)
    return x, t, context, mask


def _export_dynamo(model, spec: GraphSpec, opset: int) -> onnx.ModelProto:
    import torch

    batch = torch.export.Dim(BATCH_DIM, min=1, max=65536)
    dims: dict[str, dict[int, object]] = {name: {0: batch} for name in spec.input_names}
    if spec.dynamic_hw:  # multiples of 8 latent pixels keep every down/up-sampling stage exact
        dims["x"].update({2: 8 * torch.export.Dim("h8", min=1, max=512), 3: 8 * torch.export.Dim("w8", min=1, max=512)})
    with _quiet():
        program = torch.onnx.export(
            model, _example_inputs(spec), input_names=list(spec.input_names), output_names=[spec.output_name],
            opset_version=opset, dynamo=True, external_data=False, optimize=True,
            dynamic_shapes=dims,
        )
    if program is None:  # dynamo=True always returns the program
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNX program.")
    return program.model_proto


def _export_torchscript(model, spec: GraphSpec, opset: int) -> onnx.ModelProto:
    import torch

    buffer = io.BytesIO()
    with _quiet():
        torch.onnx.export(
            # torch annotates `f` as a path; the TorchScript exporter writes to file objects as well
            model, _example_inputs(spec), buffer, input_names=list(spec.input_names),  # type: ignore[arg-type]
            output_names=[spec.output_name], opset_version=opset, dynamo=False, do_constant_folding=True,
            dynamic_axes={name: spec.dynamic_axes(name) for name in (*spec.input_names, spec.output_name)},
        )
    return onnx.load_from_string(buffer.getvalue())


def _fix_io(model: onnx.ModelProto, spec: GraphSpec) -> None:
    """Name the batch axis "N" everywhere and check names, dtypes and fixed dims against `spec`."""
    graph = model.graph
    got_inputs = [i.name for i in graph.input]
    got_outputs = [o.name for o in graph.output]
    if got_inputs != list(spec.input_names) or got_outputs != [spec.output_name]:
        raise RuntimeError(f"exported graph has inputs {got_inputs} and outputs {got_outputs}, "
                           f"expected {list(spec.input_names)} -> [{spec.output_name!r}]")
    expected = spec.shapes()
    for value in [*graph.input, *graph.output]:
        shape, elem = expected[value.name]
        tensor = value.type.tensor_type
        if tensor.elem_type != elem:
            raise RuntimeError(f"exported {value.name!r} has ONNX type {tensor.elem_type}, expected {elem}")
        dims = tensor.shape.dim
        if len(dims) != len(shape):
            raise RuntimeError(f"exported {value.name!r} has rank {len(dims)}, expected {len(shape)}")
        for dim, want in zip(dims, shape):
            if isinstance(want, str):
                dim.Clear()
                dim.dim_param = want
            elif dim.HasField("dim_value") and dim.dim_value != want:
                raise RuntimeError(f"exported {value.name!r} has shape {list(dims)}, expected {shape}")
            else:
                dim.dim_value = want


def set_metadata(model: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Replace the model-level metadata_props with `props`."""
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def stamp_metadata(protos: Sequence[onnx.ModelProto], half: onnx.ModelProto | None, props: Mapping[str, str]) -> None:
    """model.json's facts as every graph's metadata_props, each with its precision."""
    for proto in protos:
        set_metadata(proto, {**props, "diffusion_studio.precision": "fp32"})
    if half is not None:
        set_metadata(half, {**props, "diffusion_studio.precision": "fp16 (float32 inputs/outputs)"})


def check_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx.checker (full) and strict shape inference; returns the inferred model."""
    onnx.checker.check_model(model, full_check=True)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)


def _finish(proto: onnx.ModelProto, spec: GraphSpec, opset: int) -> onnx.ModelProto:
    """Bring to `opset`, fix and check the I/O, drop debug notes, run checker + shape inference."""
    got_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got_opset != opset:
        proto = onnx.version_converter.convert_version(proto, opset)
    _fix_io(proto, spec)
    for node in proto.graph.node:  # the exporter's debug notes: stack traces with local paths, half the file
        del node.metadata_props[:]
    check_graph(proto)
    return proto


def _reason(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {first[:300]}"


def export_unet(model, spec: GraphSpec, opset: int, first: str = DYNAMO) -> tuple[onnx.ModelProto, ExportInfo]:
    """Export `model` (a UNet in eval mode, float32, CPU) to a checked ONNX ModelProto.

    The `first` exporter's graph (dynamo by default) must also pass the checks in `_finish`
    (at the requested opset); otherwise the other exporter is used and the reason recorded.
    """
    import torch

    exporters = {DYNAMO: _export_dynamo, TORCHSCRIPT: _export_torchscript}
    order = [first, *(name for name in exporters if name != first)]
    model = model.eval()
    with torch.no_grad():
        try:
            proto = _finish(exporters[order[0]](model, spec, opset), spec, opset)
            return proto, ExportInfo(exporter=order[0], opset=opset, fallback_reason=None)
        except Exception as exc:  # noqa: BLE001 - any failure means: try the other exporter
            reason = _reason(exc)
        try:
            proto = _finish(exporters[order[1]](model, spec, opset), spec, opset)
        except Exception as exc:
            raise RuntimeError(f"both exporters failed at opset {opset}: {_label(order[0])} ({reason}); "
                               f"{_label(order[1])} ({_reason(exc)})") from exc
    return proto, ExportInfo(exporter=order[1], opset=opset, fallback_reason=reason)


def _label(exporter: str) -> str:
    return "dynamo" if exporter == DYNAMO else "TorchScript"


def fp16_variant(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The mixed-precision copy (exporter.fp16) with float32 inputs and outputs, checked."""
    half = convert_to_fp16(proto, image_input="x")
    for value in [*half.graph.input, *half.graph.output]:
        if value.type.tensor_type.elem_type == _HALF:
            raise RuntimeError(f"fp16 graph has a float16 boundary {value.name!r}")
    check_graph(half)
    return half


def save_model(proto: onnx.ModelProto, path: Path) -> None:
    """Serialise to one self-contained file, atomically."""
    atomic_write_bytes(Path(path), proto.SerializeToString())


def save_fp16(folder: Path, half: onnx.ModelProto | None) -> list[str]:
    """unet.fp16.onnx into a staged bundle when there is an fp16 variant; the names written."""
    from exporter.bundle_writer import UNET_FP16_FILE

    if half is None:
        return []
    save_model(half, folder / UNET_FP16_FILE)
    return [UNET_FP16_FILE]


def save_unet_files(folder: Path, proto: onnx.ModelProto, half: onnx.ModelProto | None) -> list[str]:
    """unet.onnx (and unet.fp16.onnx when `half`) into a staged bundle; the names written."""
    from exporter.bundle_writer import UNET_FILE

    save_model(proto, folder / UNET_FILE)
    return [UNET_FILE, *save_fp16(folder, half)]


def parameter_count(proto: onnx.ModelProto) -> int:
    """Elements stored in the graph's initializers (weights and constant buffers)."""
    total = 0
    for init in proto.graph.initializer:
        size = 1
        for d in init.dims:
            size *= int(d)
        total += size
    return total

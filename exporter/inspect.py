"""`python -m exporter inspect BUNDLE`: what is in a bundle and where it can run.

`inspect_bundle` gathers plain facts (a JSON-able dict: model.json summary, every ONNX
graph's inputs/outputs, opset, parameter count and initializer dtypes, file sizes and
hashes checked against model.json, the parity report, the providers that run it here,
and whether the app's loader accepts it); `describe` renders them as text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnx

from diffusion_studio.core.bundle import MODEL_JSON, read_model_json
from diffusion_studio.core.files import sha256_file
from diffusion_studio.errors import BundleError, UsageError
from exporter.bundle_writer import VALIDATION_JSON

_DTYPES = {v: k.lower() for k, v in onnx.TensorProto.DataType.items()}


def _shape(value: onnx.ValueInfoProto) -> list[int | str]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _graph_facts(path: Path) -> dict[str, Any]:
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise BundleError(f"{path} is not a readable ONNX file ({type(exc).__name__}).") from exc
    dtypes: dict[str, int] = {}
    parameters = 0
    for init in proto.graph.initializer:
        size = 1
        for d in init.dims:
            size *= int(d)
        parameters += size
        name = _DTYPES.get(init.data_type, str(init.data_type))
        dtypes[name] = dtypes.get(name, 0) + size

    def io(values: Any) -> list[dict[str, Any]]:
        return [{"name": v.name, "dtype": _DTYPES.get(v.type.tensor_type.elem_type, "?"), "shape": _shape(v)}
                for v in values]

    meta = {p.key: p.value for p in proto.metadata_props}
    return {
        "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        "ir_version": proto.ir_version,
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "inputs": io(proto.graph.input),
        "outputs": io(proto.graph.output),
        "parameters": parameters,
        "initializer_elements_by_dtype": dtypes,
        "nodes": len(proto.graph.node),
        "precision": meta.get("diffusion_studio.precision"),
        "metadata_keys": len(meta),
    }


def _file_facts(folder: Path, name: str, declared: dict[str, Any]) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        return {"file": name, "present": False}
    digest = sha256_file(path)
    entry = declared.get(name)
    return {"file": name, "present": True, "bytes": path.stat().st_size, "sha256": digest,
            "matches_model_json": None if entry is None else
            (entry.get("sha256") == digest and entry.get("bytes") == path.stat().st_size)}


def _providers(unet: Path) -> dict[str, str]:
    from exporter.parity import runtimes

    usable, unavailable = runtimes(unet)
    facts = {r.provider: "yes" for r in usable}
    facts.update({p: f"no ({reason})" for p, reason in unavailable.items()})
    return facts


def _loads_in_app(folder: Path) -> str:
    try:
        from diffusion_studio.inference.bundle_loader import load_bundle

        bundle = load_bundle(folder, device="auto")
    except UsageError as exc:
        return f"no: {exc}"
    return f"yes, on {bundle.provider_info.describe()}"


def inspect_bundle(folder: Path) -> dict[str, Any]:
    """Facts about the bundle at `folder`; BundleError when it has no readable model.json."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"The model bundle {folder} does not exist or is not a folder.")
    read_model_json(folder)  # the app's schema check: BundleError names the bad field
    raw = json.loads((folder / MODEL_JSON).read_text(encoding="utf-8"))
    declared = {k: v for k, v in raw.get("files", {}).items() if isinstance(v, dict)}
    names = [n for n in (raw["unet"]["file"], raw["unet"].get("fp16_file")) if n]
    others = sorted({*declared, *(p.name for p in folder.iterdir() if p.is_file())} - set(names) - {MODEL_JSON})
    graphs = []
    for name in names:
        facts = _file_facts(folder, name, declared)
        if facts["present"]:
            facts.update(_graph_facts(folder / name))
        graphs.append(facts)
    report_path = folder / VALIDATION_JSON
    parity = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else None
    unet = folder / names[0]
    return {
        "bundle": str(folder.absolute()),
        "model": {k: raw.get(k) for k in ("name", "format_version", "image", "diffusion", "sampler_defaults",
                                          "unet", "conditioning", "provenance")},
        "graphs": graphs,
        "files": [_file_facts(folder, n, declared) for n in others],
        "parity": parity,
        "providers": _providers(unet) if unet.is_file() else {},
        "loads_in_app": _loads_in_app(folder),
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def describe(facts: dict[str, Any]) -> str:
    """Human-readable text of `inspect_bundle`'s facts."""
    from exporter.parity import format_report

    m = facts["model"]
    img, dif, sd, co, pr = m["image"], m["diffusion"], m["sampler_defaults"], m["conditioning"], m["provenance"]
    lines = [
        f"bundle     {facts['bundle']}",
        f"name       {m['name']} (format {m['format_version']})",
        f"image      {img['size']}x{img['size']}, {img['channels']} channels",
        f"diffusion  T={dif['T']}, {dif['schedule']} schedule, predicts {dif['prediction']}",
        f"sampling   {sd['sampler']}, {sd['steps']} steps, guidance {sd['guidance']}",
        f"text       {co['text_encoder']} encoder, {co['max_tokens']} tokens x {co['embedding_dim']}, "
        f"sha256 {str(co.get('text_encoder_sha256'))[:12]}…",
        f"unet       {m['unet']['parameters']:,} parameters, {m['unet']['flops_per_forward'] / 1e6:.1f} MFLOP "
        f"per forward, opset {m['unet']['opset']}",
        f"training   run {pr.get('run')}, step {pr.get('step')}, {pr.get('weights')} weights",
        f"exported   by {pr.get('exporter')} at {pr.get('exported_at', '?')}",
    ]
    if pr.get("metrics"):
        lines.append("metrics    " + ", ".join(f"{k}={v}" for k, v in pr["metrics"].items()))
    for g in facts["graphs"]:
        lines.append("")
        if not g["present"]:
            lines.append(f"{g['file']}: MISSING")
            continue
        check = {True: "matches model.json", False: "DOES NOT MATCH model.json", None: "not in model.json"}
        lines.append(f"{g['file']}: {_mib(g['bytes'])}, sha256 {g['sha256'][:16]}… "
                     f"({check[g['matches_model_json']]})")
        lines.append(f"  opset {g['opset']}, IR {g['ir_version']}, {g['nodes']} nodes, producer {g['producer']}")
        dtypes = ", ".join(f"{n:,} {d}" for d, n in g["initializer_elements_by_dtype"].items())
        lines.append(f"  {g['parameters']:,} stored parameters ({dtypes})")
        for kind in ("inputs", "outputs"):
            for v in g[kind]:
                shape = "[" + ", ".join(str(d) for d in v["shape"]) + "]"
                lines.append(f"  {kind[:-1]:<6} {v['name']:<13} {v['dtype']:<8} {shape}")
    for f in facts["files"]:
        if f["present"]:
            state = {True: "matches model.json", False: "DOES NOT MATCH model.json", None: "not in model.json"}
            lines.append(f"{f['file']}: {_mib(f['bytes'])}, sha256 {f['sha256'][:16]}… "
                         f"({state[f['matches_model_json']]})")
        else:
            lines.append(f"{f['file']}: MISSING")
    lines.append("")
    lines.append(format_report(facts["parity"]) if facts["parity"] else
                 "parity: no validation.json (exported with --no-validate)")
    lines.append("")
    lines.append("providers on this machine:")
    lines.extend(f"  {p}: {state}" for p, state in facts["providers"].items())
    lines.append(f"loads in the app: {facts['loads_in_app']}")
    return "\n".join(lines)

"""`python -m exporter inspect BUNDLE`: what is in a bundle and where it can run.

`inspect_bundle` gathers plain facts (a JSON-able dict: model.json summary, every ONNX
graph's inputs/outputs, opset, parameter count and initializer dtypes, file sizes and
hashes checked against model.json, the parity report, the providers that run it here,
and whether the app's loader accepts it); `describe` renders them as text.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import onnx

from diffusion_studio.core.bundle import MODEL_JSON, bundle_path, read_model_json
from diffusion_studio.core.files import read_json_file, sha256_file
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
    try:
        path = bundle_path(folder, name)  # a symlink out of the bundle is neither read nor hashed
    except BundleError as exc:
        return {"file": name, "present": False, "refused": str(exc)}
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
        from diffusion_studio.inference.latent import open_model  # pixel and latent bundles alike

        bundle = open_model(folder, device="auto")
    except UsageError as exc:
        return f"no: {exc}"
    return f"yes, on {bundle.provider_info.describe()}"


def _report_error(where: Path, field: str, expected: str, value: Any) -> BundleError:
    shown = repr(value) if isinstance(value, (bool, int, float, str)) or value is None else type(value).__name__
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return BundleError(f"The parity report {str(where)!r} is not one this exporter wrote: {field} must be "
                       f"{expected}, got {shown}.")


def _field(obj: dict[str, Any], key: str, prefix: str, where: Path, kind: str, optional: bool = False) -> Any:
    """obj[key] checked against `kind` (str, bool, int, number, list, object); BundleError names the field."""
    name = f"{prefix}{key}"
    if key not in obj:
        if optional:
            return None
        raise BundleError(f"The parity report {str(where)!r} is not one this exporter wrote: it has no {name}.")
    value = obj[key]
    ok = {
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        # inf is a real result (a NaN output measures as an infinite difference); NaN is not
        "number": isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value),
        "list": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]
    if not ok:
        expected = {"str": "a string", "bool": "true or false", "int": "an integer", "number": "a number",
                    "list": "a list", "object": "an object"}[kind]
        raise _report_error(where, name, expected, value)
    return value


def check_report(report: Any, where: Path) -> dict[str, Any]:
    """`report` (validation.json as parsed) if it has every field `describe` shows, with the right
    types; else BundleError naming the first bad field."""
    if not isinstance(report, dict):
        raise _report_error(where, "the document", "an object", report)
    if "skipped" in report:
        _field(report, "skipped", "", where, "str")
        return report
    _field(report, "bound_max_abs", "", where, "number")
    _field(report, "passed", "", where, "bool")
    for i, entry in enumerate(_field(report, "network", "", where, "list")):
        pre = f"network[{i}]."
        if not isinstance(entry, dict):
            raise _report_error(where, f"network[{i}]", "an object", entry)
        _field(entry, "file", pre, where, "str")
        _field(entry, "provider", pre, where, "str")
        if "skipped" in entry:
            _field(entry, "skipped", pre, where, "str")
            continue
        _field(entry, "gated", pre, where, "bool")
        _field(entry, "max_abs", pre, where, "number")
        _field(entry, "mean_abs", pre, where, "number")
        for j, case in enumerate(_field(entry, "cases", pre, where, "list")):
            if not isinstance(case, dict):
                raise _report_error(where, f"{pre}cases[{j}]", "an object", case)
            _field(case, "t", f"{pre}cases[{j}].", where, "int")
            _field(case, "max_abs", f"{pre}cases[{j}].", where, "number")
        finite = _field(entry, "fp16_finite", pre, where, "object", optional=True)
        if finite is not None:
            _field(finite, "timesteps_checked", f"{pre}fp16_finite.", where, "int")
            _field(finite, "finite", f"{pre}fp16_finite.", where, "bool")
    for i, comp in enumerate(_field(report, "components", "", where, "list", optional=True) or []):
        pre = f"components[{i}]."  # a latent import's text encoder and VAE graphs
        if not isinstance(comp, dict):
            raise _report_error(where, f"components[{i}]", "an object", comp)
        for key, kind in (("file", "str"), ("provider", "str"), ("bound_max_abs", "number"), ("max_abs", "number"),
                          ("mean_abs", "number"), ("passed", "bool")):
            _field(comp, key, pre, where, kind)
    for i, run in enumerate(_field(report, "sampling", "", where, "list")):
        pre = f"sampling[{i}]."
        if not isinstance(run, dict):
            raise _report_error(where, f"sampling[{i}]", "an object", run)
        for key, kind in (("sampler", "str"), ("steps", "int"), ("guidance", "number"), ("provider", "str"),
                          ("max_abs", "number"), ("mean_abs", "number"), ("max_abs_uint8", "int")):
            _field(run, key, pre, where, kind)
    for provider, reason in _field(report, "unavailable_providers", "", where, "object").items():
        if not isinstance(reason, str):
            raise _report_error(where, f"unavailable_providers.{provider}", "a string", reason)
    for i, failure in enumerate(_field(report, "failures", "", where, "list", optional=True) or []):
        if not isinstance(failure, str):
            raise _report_error(where, f"failures[{i}]", "a string", failure)
    return report


def inspect_bundle(folder: Path) -> dict[str, Any]:
    """Facts about the bundle at `folder`; BundleError when it has no readable model.json."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"The model bundle {folder} does not exist or is not a folder.")
    read_model_json(folder)  # the app's schema check: BundleError names the bad field (deep JSON, huge T)
    raw = read_json_file(bundle_path(folder, MODEL_JSON), MODEL_JSON, error=BundleError)
    declared = {k: v for k, v in raw.get("files", {}).items() if isinstance(v, dict)}
    names = [n for n in (raw["unet"]["file"], raw["unet"].get("fp16_file")) if n]
    others = sorted({*declared, *(p.name for p in folder.iterdir() if p.is_file())} - set(names) - {MODEL_JSON})
    graphs = []
    for name in names:
        facts = _file_facts(folder, name, declared)
        if facts["present"]:
            facts.update(_graph_facts(folder / name))
        graphs.append(facts)
    parity = None
    if (folder / VALIDATION_JSON).exists() or (folder / VALIDATION_JSON).is_symlink():
        report_path = bundle_path(folder, VALIDATION_JSON, f"the parity report {VALIDATION_JSON}")
        parity = check_report(read_json_file(report_path, "The parity report", error=BundleError), report_path)
    unet = folder / names[0]  # opened below only when it resolved inside the bundle
    return {
        "bundle": str(folder.absolute()),
        "model": {k: raw.get(k) for k in ("name", "format_version", "image", "diffusion", "sampler_defaults",
                                          "unet", "conditioning", "provenance", "vocabulary", "latent")},
        "graphs": graphs,
        "files": [_file_facts(folder, n, declared) for n in others],
        "parity": parity,
        "providers": _providers(unet) if graphs[0]["present"] else {},
        "loads_in_app": _loads_in_app(folder),
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


VOCABULARY_SHOWN = 12  # words of the vocabulary `describe` lists


def _vocabulary_line(vocabulary: list[str] | None) -> str:
    """'vocabulary 34 words: red, orange, …' (the first VOCABULARY_SHOWN), or that there is none."""
    if not vocabulary:
        return "vocabulary not declared (no note on unknown prompt words)"
    shown = ", ".join(vocabulary[:VOCABULARY_SHOWN]) + (", …" if len(vocabulary) > VOCABULARY_SHOWN else "")
    return f"vocabulary {len(vocabulary)} word{'s' if len(vocabulary) != 1 else ''}: {shown}"


def _diffusion_line(dif: dict[str, Any]) -> str:
    """'T=1000, linear schedule (β 0.0001 → 0.02), predicts epsilon, variance fixed_small, x̂_0 clipped to ±1'."""
    schedule = f"{dif['schedule']} schedule"
    if dif.get("beta_start") is not None:
        schedule += f" (β {dif['beta_start']:g} → {dif['beta_end']:g})"
    elif dif["schedule"] != "cosine" and "variance" in dif:  # format 2 says so; format 1 has no β ends
        schedule += " (default β ends)"
    line = f"T={dif['T']}, {schedule}, predicts {dif['prediction']}"
    if "variance" in dif:  # format 2
        clip = f"x̂_0 clipped to ±{dif['clip_sample_range']:g}" if dif.get("clip_sample", True) else "x̂_0 not clipped"
        line += f", variance {dif['variance']}, {clip}"
    return line


def _conditioning_line(co: dict[str, Any]) -> str:
    kind = co.get("kind", "text")
    if kind == "none":
        return "none (unconditional: no prompt, no class)"
    if kind == "class":
        names = co.get("class_names")
        shown = ""
        if names:
            shown = ": " + ", ".join(names[:VOCABULARY_SHOWN]) + (", …" if len(names) > VOCABULARY_SHOWN else "")
        return f"class, {co['num_classes']} classes{shown or ' (unnamed: 0 … ' + str(co['num_classes'] - 1) + ')'}"
    if co.get("text_encoder_kind") == "clip":
        return f"text, CLIP encoder {co['text_encoder']}, {co['max_tokens']} tokens x {co['embedding_dim']}"
    return (f"text, {co['text_encoder']} encoder, {co['max_tokens']} tokens x {co['embedding_dim']}, "
            f"sha256 {str(co.get('text_encoder_sha256'))[:12]}…")


def _latent_lines(la: dict[str, Any], size: int, co: dict[str, Any], dif: dict[str, Any]) -> list[str]:
    """The latent bundle's lines: latents, VAE graphs, tokenizer, preview map (issue 16)."""
    h = size // la["factor"]
    encoder = f", encoder {la['vae_encoder']} (image to latent mean, for img2img)" if la.get("vae_encoder") else \
        ", no encoder (no img2img)"
    preview = la.get("preview")
    lines = [
        f"latent     {la['channels']} channels x {h}x{h} (factor {la['factor']}), scaling factor "
        f"{la['scaling_factor']:g}, sampler steps_offset {dif.get('steps_offset', 0)}",
        f"vae        decoder {la['vae_decoder']} (latent / scaling factor to image){encoder}",
        f"tokenizer  {co.get('tokenizer')} (CLIP BPE), max length {co['max_tokens']}, pad id {co.get('pad_token_id')}",
        f"preview    {'a fitted 3x' + str(la['channels']) + ' latent-to-RGB map' if preview else 'none'}",
    ]
    return lines


def describe(facts: dict[str, Any]) -> str:
    """Human-readable text of `inspect_bundle`'s facts."""
    from exporter.parity import format_report

    m = facts["model"]
    img, dif, sd, co, pr = m["image"], m["diffusion"], m["sampler_defaults"], m["conditioning"], m["provenance"]
    lines = [
        f"bundle     {facts['bundle']}",
        f"name       {m['name']} (format {m['format_version']})",
        f"image      {img['size']}x{img['size']}, {img['channels']} channels",
        f"diffusion  {_diffusion_line(dif)}",
        f"sampling   {sd['sampler']}, {sd['steps']} steps, guidance {sd['guidance']}",
        f"condition  {_conditioning_line(co)}",
        f"unet       {m['unet']['parameters']:,} parameters, {m['unet']['flops_per_forward'] / 1e6:.1f} MFLOP "
        f"per forward, opset {m['unet']['opset']}",
    ]
    if m.get("latent"):
        lines.extend(_latent_lines(m["latent"], img["size"], co, dif))
    elif co.get("kind", "text") == "text":
        lines.append(_vocabulary_line(m.get("vocabulary")))
    if pr.get("pipeline") is not None or pr.get("weights") == "diffusers":
        lines.append(f"imported   from diffusers {pr.get('pipeline') or 'UNet2DModel folder'} {pr.get('source')!r}, "
                     f"scheduler {pr.get('scheduler')}, diffusers {pr.get('source_diffusers_version')}")
    else:
        lines.append(f"training   run {pr.get('run')}, step {pr.get('step')}, {pr.get('weights')} weights")
    lines.append(f"exported   by {pr.get('exporter')} at {pr.get('exported_at', '?')}")
    if pr.get("metrics"):
        lines.append("metrics    " + ", ".join(f"{k}={v}" for k, v in pr["metrics"].items()))
    for g in facts["graphs"]:
        lines.append("")
        if not g["present"]:
            lines.append(f"{g['file']}: REFUSED ({g['refused']})" if g.get("refused") else f"{g['file']}: MISSING")
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
        elif f.get("refused"):
            lines.append(f"{f['file']}: REFUSED ({f['refused']})")
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

"""`python -m exporter diffusers SRC --out BUNDLE`: a diffusers UNet2DModel pipeline as a format-2 bundle.

The graph wraps the UNet2DModel: inputs x [N,C,H,W], t int64 [N] (the paper's t ∈ 1…T; the
graph feeds t − 1, diffusers' timestep) and, for a class-conditional UNet, class_labels int64
[N]; output `model_output`, the UNet's sample (ε̂, v̂ or x̂_0 as model.json says; 2C channels
with a learned variance). It is written like a training export (exporter.export): every check
before anything is created, graphs checked in memory, the bundle staged beside the target,
parity-checked and loaded by the app's own loader, then swapped into place.

The TorchScript exporter goes first here: it traces diffusers' UNet2DModel faithfully (checked
by the parity report) and in a fraction of the dynamo exporter's time; dynamo is the fallback.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_studio.core.params import DEFAULT_SAMPLER, DEFAULT_STEPS
from exporter import bundle_writer as bw
from exporter.diffusers_source import DiffusersSource, load_diffusers_source
from exporter.export import DEFAULT_OPSET, ExportOptions, _self_check, _versions
from exporter.parity import PARITY_BOUND, Runtime, record_report, start_report
from exporter.unet_export import (
    TORCHSCRIPT,
    ExportInfo,
    GraphSpec,
    export_unet,
    fp16_variant,
    save_unet_files,
    stamp_metadata,
)

BATCH_SIZES = (1, 3)
INPUT_SEED = 20240611
NO_GUIDANCE = 1.0  # ε̂ of the condition alone: an imported UNet has no "empty" condition to guide from


@dataclass(frozen=True)
class ImportOptions:
    """Everything `python -m exporter diffusers SRC --out BUNDLE ...` accepts."""

    source: Path
    out: Path
    name: str | None = None
    fp16: bool = False
    force: bool = False
    validate: bool = True
    opset: int = DEFAULT_OPSET

    def check(self) -> None:
        """UsageError for a bad option or target (the export's own checks); writes nothing."""
        ExportOptions(source=self.source, out=self.out, opset=self.opset, name=self.name, force=self.force).check()


@dataclass
class ImportResult:
    bundle: Path
    spec: dict[str, Any]
    report: dict[str, Any] | None
    info: ExportInfo
    notes: list[str] = field(default_factory=list)


def wrap(unet: Any, with_classes: bool) -> Any:
    """The module the graph is traced from: (x, t[, class_labels]) -> unet(x, t − 1[, class_labels]).sample.

    The paper's t = 1 … T is diffusers' timestep t − 1 (the same ᾱ).
    """
    import torch

    class Unconditional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = unet

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.unet(x, t - 1, return_dict=False)[0]

    class WithClasses(Unconditional):
        def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return self.unet(x, t - 1, class_labels=class_labels, return_dict=False)[0]

    return (WithClasses() if with_classes else Unconditional()).eval()


# --- parity ----------------------------------------------------------------------------------


def check_timesteps(T: int) -> list[int]:
    """1, T/2 and T (the two ends and the middle of the chain)."""
    return sorted({1, max(1, round(T / 2)), T})


def _inputs(src: DiffusersSource, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(INPUT_SEED)
    s = src.image_size
    feeds = {"x": rng.standard_normal((batch, src.channels, s, s)).astype(np.float32)}
    if src.num_classes is not None:
        feeds["class_labels"] = rng.integers(0, src.num_classes, size=batch).astype(np.int64)
    return feeds


def _torch_out(model: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.no_grad():
        args = [torch.from_numpy(feeds[k]) for k in ("x", "t", "class_labels") if k in feeds]
        return model(*args).numpy().astype(np.float32)


def _network(model: Any, session: Any, src: DiffusersSource) -> dict[str, Any]:
    """max/mean |out_torch − out_onnx| per (timestep, batch size)."""
    base = _inputs(src, max(BATCH_SIZES))
    cases, worst, total, count = [], 0.0, 0.0, 0
    for t in check_timesteps(src.T):
        for n in BATCH_SIZES:
            feeds = {k: v[:n] for k, v in base.items()}
            feeds["t"] = np.full(n, t, dtype=np.int64)
            ref = _torch_out(model, feeds)
            got = np.asarray(session.run(None, feeds)[0], dtype=np.float32)
            diff = np.abs(got.astype(np.float64) - ref)  # NaN stays NaN and fails the bound
            case_max = float(diff.max()) if np.all(np.isfinite(diff)) else float("inf")
            cases.append({"t": t, "batch": n, "max_abs": case_max, "mean_abs": float(diff.mean())})
            worst, total, count = max(worst, case_max), total + float(diff.sum()), count + diff.size
    return {"max_abs": worst, "mean_abs": total / count, "cases": cases}


def _fp16_finite(session: Any, src: DiffusersSource, chunk: int = 50) -> dict[str, Any]:
    """The fp16 graph's output is finite at every t ∈ {1…T}."""
    base = _inputs(src, chunk)
    bad: list[int] = []
    for start in range(1, src.T + 1, chunk):
        ts = np.arange(start, min(src.T, start + chunk - 1) + 1, dtype=np.int64)
        feeds = {k: v[:len(ts)] for k, v in base.items()}
        feeds["t"] = ts
        out = np.asarray(session.run(None, feeds)[0])
        bad.extend(int(t) for t, row in zip(ts, out) if not np.all(np.isfinite(row)))
    return {"timesteps_checked": src.T, "finite": not bad, "non_finite_timesteps": bad[:20]}


def _fp16_entry(runtime: Runtime, model: Any, path: Path, src: DiffusersSource, failures: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"provider": runtime.provider, "file": path.name, "gated": False}
    try:
        session = runtime.open(path)
    except Exception as exc:  # noqa: BLE001 - not every provider has fp16 kernels
        entry["skipped"] = f"cannot run here: {(str(exc).strip().splitlines() or ['?'])[-1][:200]}"
        return entry
    entry.update(_network(model, session, src))
    entry["fp16_finite"] = finite = _fp16_finite(session, src)
    if not finite["finite"]:
        failures.append(f"{path.name} on {runtime.provider} gives NaN/Inf at t={finite['non_finite_timesteps'][:5]}")
    return entry


def validate_import(model: Any, folder: Path, src: DiffusersSource, fp16_file: str | None,
                    bound: float = PARITY_BOUND) -> dict[str, Any]:
    """ONNX Runtime (every provider that runs here) vs the diffusers UNet in torch; `passed` gates on `bound`.

    The report has the training export's layout (exporter.parity), so inspect reads both.
    """
    fp32_path = folder / bw.UNET_FILE
    report, usable, failures = start_report(
        fp32_path, bound, {"seed": INPUT_SEED, "timesteps": check_timesteps(src.T), "batch_sizes": list(BATCH_SIZES)},
        reference="diffusers UNet2DModel in PyTorch (float32)")
    for runtime in usable:
        entry: dict[str, Any] = {"provider": runtime.provider, "file": fp32_path.name, "gated": True,
                                 **_network(model, runtime.open(fp32_path), src)}
        entry["passed"] = entry["max_abs"] <= bound
        if not entry["passed"]:
            failures.append(f"{runtime.provider} max |Δ| {entry['max_abs']:.3g} > {bound:g}")
        report["network"].append(entry)
        if fp16_file:
            report["network"].append(_fp16_entry(runtime, model, folder / fp16_file, src, failures))
    report["passed"] = not failures
    report["failures"] = failures
    return report


# --- the bundle ------------------------------------------------------------------------------


def _flops(model: Any, src: DiffusersSource) -> int:
    """Floating-point operations of one forward at batch 1 (torch's FLOP counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    feeds = _inputs(src, 1)
    feeds["t"] = np.ones(1, dtype=np.int64)
    args = [torch.from_numpy(feeds[k]) for k in ("x", "t", "class_labels") if k in feeds]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*args)
    return int(counter.get_total_flops())


def _conditioning(src: DiffusersSource) -> dict[str, Any]:
    if src.num_classes is None:
        return {"kind": "none"}
    return {"kind": "class", "num_classes": src.num_classes, "class_names": None}


def import_bundle(opts: ImportOptions, log: Callable[[str], None] = lambda _msg: None) -> ImportResult:
    """Import `opts.source` into the bundle folder `opts.out` (module docstring)."""
    from exporter.latent_import import import_latent_bundle, is_latent_pipeline

    if is_latent_pipeline(Path(opts.source)):  # a StableDiffusionPipeline: a latent bundle (issue 16)
        return import_latent_bundle(opts, log)
    opts.check()
    out = Path(opts.out).absolute()
    notes: list[str] = bw.tidy_leftovers(out)
    if notes:
        bw.check_target(out, opts.force)
    log(f"loading {opts.source}")
    src = load_diffusers_source(Path(opts.source))
    notes += src.notes
    model = wrap(src.unet, src.num_classes is not None)
    parameters = int(sum(p.numel() for p in src.unet.parameters()))
    spec = GraphSpec(channels=src.channels, image_size=src.image_size, kind=src.kind, out_channels=src.out_channels)

    log(f"exporting the UNet2DModel ({parameters:,} parameters, opset {opts.opset})")
    proto, info = export_unet(model, spec, opts.opset, first=TORCHSCRIPT)
    if info.fallback_reason:
        notes.append(f"the TorchScript exporter failed ({info.fallback_reason}); used the dynamo exporter")
    half = fp16_variant(proto) if opts.fp16 else None

    import diffusers

    provenance = {
        "run": None,
        "step": None,
        "weights": "diffusers",
        "metrics": {},
        "exporter": info.exporter,
        "exporter_fallback_reason": info.fallback_reason,
        "source": Path(opts.source).absolute().name,  # the folder's name: no path of the building machine
        "source_weights": src.weights_file,
        "pipeline": src.pipeline,
        "scheduler": src.scheduler or "none (DDPMScheduler defaults assumed)",
        "source_diffusers_version": src.source_diffusers_version,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {**_versions(), "diffusers": diffusers.__version__},
        "validated": bool(opts.validate),
    }
    model_spec = bw.model_json(
        name=opts.name or out.name, image_size=src.image_size, channels=src.channels, T=src.T,
        schedule=src.diffusion["schedule"],
        sampler_defaults={"sampler": DEFAULT_SAMPLER.value, "steps": min(src.T, DEFAULT_STEPS),
                          "guidance": NO_GUIDANCE},
        unet={"file": bw.UNET_FILE, "fp16_file": bw.UNET_FP16_FILE if half is not None else None,
              "opset": info.opset, "parameters": parameters, "flops_per_forward": _flops(model, src)},
        conditioning=_conditioning(src), provenance=provenance, diffusion=src.diffusion,
    )
    props = bw.metadata_props(model_spec)
    stamp_metadata([proto], half, props)

    report: dict[str, Any] | None = None
    with bw.staged_bundle(out, opts.force) as tmp:
        names = save_unet_files(tmp, proto, half)
        if opts.validate:
            log("checking parity between the diffusers UNet (PyTorch) and ONNX Runtime")
            report = validate_import(model, tmp, src, bw.UNET_FP16_FILE if half is not None else None)
            record_report(report, tmp, names)
        bw.seal(tmp, names, model_spec)
        _self_check(tmp)
    return ImportResult(bundle=out, spec=model_spec, report=report, info=info, notes=notes)


"""The export pipeline: checkpoint -> checked ONNX graphs -> parity -> bundle folder.

Order matters for "never half-written": every input check happens before anything is
created; the graphs are exported and checked in memory; the bundle is assembled in a
temp folder, validated (parity, then the app's own bundle loader), and only then
renamed onto the target.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffusion_studio.core.params import (
    DEFAULT_GUIDANCE,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    check_guidance,
    check_steps,
    parse_sampler,
)
from diffusion_studio.errors import UsageError
from exporter import bundle_writer as bw
from exporter.parity import record_report, validate_export
from exporter.source import ExportSource, config_value, load_source
from exporter.unet_export import (
    MIN_OPSET,
    ExportInfo,
    GraphSpec,
    export_unet,
    fp16_variant,
    max_opset,
    save_unet_files,
    stamp_metadata,
)
from exporter.vocabulary import run_vocabulary

if TYPE_CHECKING:
    from diffusion_studio.training.unet import UNet

DEFAULT_OPSET = 18
_NAME = re.compile(r"^[\w][\w .+-]{0,63}$")


@dataclass(frozen=True)
class ExportOptions:
    """Everything `python -m exporter RUN --out BUNDLE ...` accepts."""

    source: Path
    out: Path
    weights: str = "ema"
    opset: int = DEFAULT_OPSET
    fp16: bool = False
    validate: bool = True
    force: bool = False
    name: str | None = None
    guidance: float | None = None
    steps: int | None = None
    sampler: str | None = None
    include_text_encoder: bool = False  # copy the shared encoder into the bundle (self-contained)

    def check(self) -> None:
        """Raise UsageError for a bad option; reads the file system but writes nothing."""
        if self.weights not in ("ema", "raw"):
            raise UsageError(f"Unknown weights {self.weights!r}; choose ema or raw.")
        if not MIN_OPSET <= self.opset <= max_opset():
            raise UsageError(f"Opset {self.opset} is not supported; choose {MIN_OPSET} to {max_opset()}.")
        if self.name is not None and not _NAME.match(self.name):
            raise UsageError(f"The name {self.name!r} must be 1-64 letters, digits, spaces, '.', '+', '-' or '_'.")
        # --steps is checked against the model's T once the run is loaded (_sampler_defaults).
        if self.guidance is not None:
            check_guidance(self.guidance)
        if self.sampler is not None:
            parse_sampler(self.sampler)
        if self.include_text_encoder:
            from diffusion_studio.paths import text_encoder_dir

            bw.check_text_encoder_source(text_encoder_dir())
        if not Path(self.source).exists():
            raise UsageError(f"{self.source} does not exist.")
        source, out = Path(self.source).absolute(), Path(self.out).absolute()
        if out == source or out in source.parents:
            raise UsageError(f"The output {self.out} would overwrite the checkpoint it exports.")
        bw.check_target(out, self.force)


@dataclass
class ExportResult:
    bundle: Path
    spec: dict[str, Any]
    report: dict[str, Any] | None
    info: ExportInfo
    notes: list[str] = field(default_factory=list)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    from diffusion_studio import __version__

    versions = {"diffusion_studio": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}
    try:
        import onnxscript

        versions["onnxscript"] = onnxscript.__version__
    except ImportError:
        pass
    return versions


def _json_safe(value: Any) -> Any:
    """Metrics as plain JSON: NaN/Inf become None, tensors and numpy scalars become numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _conditioning(src: ExportSource, notes: list[str]) -> dict[str, Any]:
    """"shared" encoder pinned by the sha256s the run was trained with (else today's shared files)."""
    from diffusion_studio.paths import text_encoder_dir

    cfg = src.config
    recorded = cfg.get("text_encoder")
    if not isinstance(recorded, dict):
        recorded = {}
    enc_sha = config_value(cfg, "text_encoder_sha256") or recorded.get("sha256")
    tok_sha = config_value(cfg, "tokenizer_sha256") or recorded.get("tokenizer_sha256")
    files = (text_encoder_dir() / "text_encoder.onnx", text_encoder_dir() / "tokenizer.json")
    if all(p.is_file() for p in files):
        shared_enc, shared_tok = bw.sha256_file(files[0]), bw.sha256_file(files[1])
        if enc_sha is None or tok_sha is None:
            enc_sha, tok_sha = enc_sha or shared_enc, tok_sha or shared_tok
            notes.append("the run config does not record the text encoder's sha256; "
                         "pinned the shared encoder found at export time")
        if (enc_sha, tok_sha) != (shared_enc, shared_tok):
            raise UsageError(f"The run {src.path} was trained with another text encoder than the shared one in "
                             f"{files[0].parent} (sha256 {str(enc_sha)[:12]}… vs {shared_enc[:12]}…), "
                             "so the app could not use this bundle.")
    return {"text_encoder": "shared", "max_tokens": src.max_tokens,
            "embedding_dim": int(src.unet_config.context_dim),
            "text_encoder_sha256": enc_sha, "tokenizer_sha256": tok_sha}


def _sampler_defaults(opts: ExportOptions, src: ExportSource) -> dict[str, Any]:
    cfg = src.config
    sampler = parse_sampler(opts.sampler or config_value(cfg, "sampler", default=DEFAULT_SAMPLER.value)).value
    steps = check_steps(opts.steps if opts.steps is not None else min(src.T, DEFAULT_STEPS), src.T)
    if opts.guidance is not None:
        return {"sampler": sampler, "steps": steps, "guidance": check_guidance(opts.guidance)}
    guidance = config_value(cfg, "guidance", "sample_guidance", default=DEFAULT_GUIDANCE)
    try:
        return {"sampler": sampler, "steps": steps, "guidance": check_guidance(guidance)}
    except UsageError as exc:  # the run's value, not the user's: say where it came from and what to do
        raise UsageError(f"{str(exc).rstrip('.')} (the run's guidance); pass --guidance W.") from None


def _parameters(model: UNet) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _flops(model: UNet) -> int:
    from diffusion_studio.training.unet import estimate_flops

    return int(estimate_flops(model))


def export_bundle(opts: ExportOptions, log: Callable[[str], None] = lambda _msg: None) -> ExportResult:
    """Export `opts.source` into the bundle folder `opts.out` (see module docstring)."""
    opts.check()
    out = Path(opts.out).absolute()
    # An export killed mid-swap may have left the previous bundle aside: restore it (and drop the
    # temp folders of dead exports) before deciding whether --force is needed.
    notes: list[str] = bw.tidy_leftovers(out)
    if notes:
        bw.check_target(out, opts.force)
    log(f"loading {opts.source} ({opts.weights} weights)")
    src = load_source(Path(opts.source), opts.weights)
    ucfg = src.unet_config
    spec = GraphSpec(channels=int(ucfg.in_channels), image_size=int(ucfg.image_size),
                     max_tokens=src.max_tokens, context_dim=int(ucfg.context_dim),
                     out_channels=int(ucfg.out_channels))  # 2C: [ε̂, v] of a --learn-sigma run
    sampler_defaults = _sampler_defaults(opts, src)
    conditioning = _conditioning(src, notes)
    vocabulary, vocabulary_note = run_vocabulary(src.config)
    if vocabulary_note:
        notes.append(vocabulary_note)
    if opts.include_text_encoder:  # the same files, pinned by the same sha256s, inside the bundle
        conditioning["text_encoder"] = bw.TEXT_ENCODER_FILE

    log(f"exporting the U-Net ({_parameters(src.model):,} parameters, opset {opts.opset})")
    proto, info = export_unet(src.model, spec, opts.opset)
    if info.fallback_reason:
        notes.append(f"the dynamo exporter failed ({info.fallback_reason}); used the TorchScript exporter")
    half = fp16_variant(proto) if opts.fp16 else None

    ckpt = src.checkpoint
    # Paths relative to the bundle folder: a bundle holds no absolute path of the building machine.
    provenance = {
        "run": bw.relative_path(getattr(ckpt, "run_dir", None) or src.path, out),
        "checkpoint": bw.relative_path(getattr(ckpt, "path", None) or src.path, out),
        "step": int(ckpt.step),
        "weights": src.weights,
        "metrics": _json_safe(dict(ckpt.metrics or {})),
        "exporter": info.exporter,
        "exporter_fallback_reason": info.fallback_reason,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "validated": bool(opts.validate),
    }
    model_spec = bw.model_json(
        name=opts.name or out.name, image_size=spec.image_size, channels=spec.channels, T=src.T,
        schedule=src.schedule, sampler_defaults=sampler_defaults,
        unet={"file": bw.UNET_FILE, "fp16_file": bw.UNET_FP16_FILE if half is not None else None,
              "opset": info.opset, "parameters": _parameters(src.model), "flops_per_forward": _flops(src.model)},
        conditioning=conditioning, provenance=provenance, vocabulary=vocabulary,
        # a --learn-sigma U-Net declares its learned Σ_θ (Improved DDPM eq. 15): format_version 2
        diffusion={"prediction": "epsilon", "variance": "learned_range"} if ucfg.learn_sigma else None,
    )
    props = bw.metadata_props(model_spec)
    stamp_metadata([proto], half, props)

    report: dict[str, Any] | None = None
    with bw.staged_bundle(out, opts.force) as tmp:
        names = save_unet_files(tmp, proto, half)
        if opts.include_text_encoder:
            names += _include_text_encoder(tmp, conditioning)
        if opts.validate:
            log("checking parity between PyTorch and ONNX Runtime")
            report = validate_export(
                src.model, tmp, spec, T=src.T, schedule=src.schedule,
                variance="learned_range" if ucfg.learn_sigma else "fixed_large",
                guidance=sampler_defaults["guidance"], conditioning=conditioning,
                fp16_file=bw.UNET_FP16_FILE if half is not None else None,
            )
            record_report(report, tmp, names)
        bw.seal(tmp, names, model_spec)
        _self_check(tmp)
    return ExportResult(bundle=out, spec=model_spec, report=report, info=info, notes=notes)


def _include_text_encoder(bundle: Path, conditioning: dict[str, Any]) -> list[str]:
    """Copy the shared encoder into the staged bundle; its hashes must be the pinned ones."""
    from diffusion_studio.paths import text_encoder_dir

    names = bw.copy_text_encoder(text_encoder_dir(), bundle)
    pinned = {bw.TEXT_ENCODER_FILE: conditioning.get("text_encoder_sha256"),
              bw.TOKENIZER_FILE: conditioning.get("tokenizer_sha256")}
    for name, sha in pinned.items():
        if sha is not None and bw.sha256_file(bundle / name) != sha:
            raise UsageError(f"The shared {name} changed during the export (sha256 differs from the pinned one).")
    return names


def _self_check(folder: Path) -> None:
    """The app's own loader must accept the bundle before it is renamed into place."""
    from diffusion_studio.inference.bundle_loader import load_bundle

    try:
        load_bundle(folder)
    except UsageError as exc:
        raise RuntimeError(f"the app's bundle loader rejects the exported bundle: {exc}") from exc

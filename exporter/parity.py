"""Export parity: PyTorch vs ONNX Runtime, per timestep, per provider, and over whole samplings.

validation.json holds:
- `network`: for fixed inputs at timesteps spread over [1, T] and batch sizes 1 and 4,
  max and mean |ε_torch − ε_onnx| per timestep, for every provider that loads here
  (fp32 file gated at `bound`; the fp16 file, when present, reported against fp32 torch).
- `fp16_finite`: the fp16 graph's output is finite at every t ∈ {1..T}.
- `sampling`: a 20-step DPM-Solver++(2M) and a 50-step DDIM run with classifier-free
  guidance from the same seed through both denoisers; the final images' differences.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from diffusion_studio.core.params import SamplerKind
from exporter.unet_export import GraphSpec

PARITY_BOUND = 1e-4  # max |Δε| allowed for the fp32 graph
BATCH_SIZES = (1, 4)
SAMPLING_RUNS = ((SamplerKind.DPMPP_2M.value, 20), (SamplerKind.DDIM.value, 50))
PROMPT = "a large red circle in the top left on a white background"
INPUT_SEED = 20240611
SAMPLING_SEED = 1234
SKIPPED_PROVIDERS = {"AzureExecutionProvider": "not a compute provider"}


class ParityError(RuntimeError):
    """The exported graph does not reproduce the PyTorch network within the bound."""


@dataclass(frozen=True)
class Runtime:
    """A provider that really runs here, and how to open a session on it."""

    provider: str
    open: Callable[[Path], ort.InferenceSession]


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _open_with(provider: str, options: dict[str, Any] | None = None) -> Callable[[Path], ort.InferenceSession]:
    from diffusion_studio.inference.providers import session_options

    def open_session(path: Path) -> ort.InferenceSession:
        providers: list[Any] = [(provider, options or {})]
        if provider != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")
        with _silenced():
            session = ort.InferenceSession(str(path), sess_options=session_options(), providers=providers)
        if session.get_providers()[0] != provider:
            raise RuntimeError(f"{provider} could not be created (no usable device or driver)")
        return session

    return open_session


def _library_problem(short: str) -> str | None:
    lib = Path(ort.__file__).resolve().parent / "capi" / f"libonnxruntime_providers_{short}.so"
    if not lib.exists():
        return None
    try:
        ctypes.CDLL(str(lib))
    except OSError as exc:
        return f"provider library cannot be loaded ({str(exc).splitlines()[0]})"
    return None


def runtimes(probe_model: Path) -> tuple[list[Runtime], dict[str, str]]:
    """Providers that can run `probe_model` here, and why the others cannot."""
    from diffusion_studio.inference.providers import cuda_provider_options, cuda_unusable_reason

    usable: list[Runtime] = []
    unavailable: dict[str, str] = {}
    for provider in ort.get_available_providers():
        if provider in SKIPPED_PROVIDERS:
            unavailable[provider] = SKIPPED_PROVIDERS[provider]
            continue
        options: dict[str, Any] | None = None
        reason: str | None = None
        if provider == "CUDAExecutionProvider":
            reason = cuda_unusable_reason()
            # Exact fp32 for the parity check: no TF32 tensor-core rounding.
            options = {**cuda_provider_options(), "use_tf32": 0}
        elif provider == "TensorrtExecutionProvider":
            reason = _library_problem("tensorrt")
        if reason is None:
            opener = _open_with(provider, options)
            try:
                opener(probe_model)
            except Exception as exc:  # noqa: BLE001 - a provider that does not load is reported, not fatal
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
        if reason is None:
            usable.append(Runtime(provider, opener))
        else:
            unavailable[provider] = reason
    return usable, unavailable


def check_timesteps(T: int) -> list[int]:
    """Five timesteps spread over [1, T]: 1, T/4, T/2, 3T/4, T."""
    return sorted({max(1, min(T, round(T * f))) for f in (0.0, 0.25, 0.5, 0.75, 1.0)} | {1, T})


def fixed_inputs(spec: GraphSpec, batch: int = max(BATCH_SIZES)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x_t ~ N(0, I), a random context and masks with 2, 5, 9, L real tokens (seeded)."""
    rng = np.random.default_rng(INPUT_SEED)
    x = rng.standard_normal((batch, spec.channels, spec.image_size, spec.image_size)).astype(np.float32)
    context = rng.standard_normal((batch, spec.max_tokens, spec.context_dim)).astype(np.float32)
    real = [min(spec.max_tokens, n) for n in (2, 5, 9, spec.max_tokens)]
    mask = np.stack([(np.arange(spec.max_tokens) < real[i % 4]).astype(np.float32) for i in range(batch)])
    return x, context, mask


def _torch_eps(model: Any, x: np.ndarray, t: np.ndarray, context: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(context), torch.from_numpy(mask))
    return out.numpy().astype(np.float32)


def _onnx_eps(session: ort.InferenceSession, x, t, context, mask) -> np.ndarray:
    feeds = {"x": x, "t": t, "context": context, "context_mask": mask}
    return np.asarray(session.run(["eps"], feeds)[0], dtype=np.float32)


def network_parity(model: Any, session: ort.InferenceSession, spec: GraphSpec, T: int) -> dict[str, Any]:
    """max/mean |ε_torch − ε_onnx| per (timestep, batch size)."""
    x, context, mask = fixed_inputs(spec)
    cases, worst, total, count = [], 0.0, 0.0, 0
    for t in check_timesteps(T):
        for n in BATCH_SIZES:
            ts = np.full(n, t, dtype=np.int64)
            ref = _torch_eps(model, x[:n], ts, context[:n], mask[:n])
            got = _onnx_eps(session, x[:n], ts, context[:n], mask[:n])
            diff = np.abs(got.astype(np.float64) - ref)  # NaN stays NaN and fails the bound
            case_max = float(diff.max()) if np.all(np.isfinite(diff)) else float("inf")
            cases.append({"t": t, "batch": n, "max_abs": case_max, "mean_abs": float(diff.mean())})
            worst, total, count = max(worst, case_max), total + float(diff.sum()), count + diff.size
    return {"max_abs": worst, "mean_abs": total / count, "cases": cases}


def fp16_finite(session: ort.InferenceSession, spec: GraphSpec, T: int, chunk: int = 50) -> dict[str, Any]:
    """Run the fp16 graph at every t ∈ {1..T}; report the timesteps whose output is not finite."""
    x, context, mask = fixed_inputs(spec, batch=chunk)
    bad: list[int] = []
    for start in range(1, T + 1, chunk):
        ts = np.arange(start, min(T, start + chunk - 1) + 1, dtype=np.int64)
        n = len(ts)
        eps = _onnx_eps(session, x[:n], ts, context[:n], mask[:n])
        bad.extend(int(t) for t, row in zip(ts, eps) if not np.all(np.isfinite(row)))
    return {"timesteps_checked": T, "finite": not bad, "non_finite_timesteps": bad[:20]}


def _conditioning(
    spec: GraphSpec, conditioning: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(context, mask, uncond_context, uncond_mask, source) for the sampling runs.

    The shared MiniLM encoder when it is the one the bundle pins; else a seeded random context.
    """
    try:
        from diffusion_studio.inference.text_encoder import TextEncoder

        encoder = TextEncoder(max_tokens=spec.max_tokens)
        pinned = conditioning.get("text_encoder_sha256")
        if encoder.embedding_dim == spec.context_dim and (pinned is None or pinned == encoder.sha256):
            with warnings.catch_warnings():  # a short max_tokens truncates the prompt: fine here
                warnings.simplefilter("ignore")
                c, m = encoder.encode([PROMPT])
                u, um = encoder.encode([""])
            return c, m, u, um, f"text encoder: {PROMPT!r} / ''"
    except Exception:  # noqa: BLE001 - parity does not depend on the text encoder being present
        pass
    rng = np.random.default_rng(INPUT_SEED + 1)
    shape = (1, spec.max_tokens, spec.context_dim)
    mask = (np.arange(spec.max_tokens) < min(6, spec.max_tokens)).astype(np.float32)[None]
    umask = (np.arange(spec.max_tokens) < min(2, spec.max_tokens)).astype(np.float32)[None]
    return (rng.standard_normal(shape).astype(np.float32), mask,
            rng.standard_normal(shape).astype(np.float32), umask, "synthetic random context")


def _final_image(denoiser: Any, schedule: Any, shape: tuple[int, ...], cond: tuple, w: float,
                 sampler: str, steps: int, variance: str = "fixed_large") -> np.ndarray:
    from diffusion_studio.core.guidance import guided_eps_fn
    from diffusion_studio.core.sampling_loop import run_to_end, sample

    eps_fn = guided_eps_fn(denoiser, cond[0], cond[1], cond[2], cond[3], w, variance)
    steps_run = sample(eps_fn, schedule, shape, sampler=sampler, steps=steps, rng=np.random.default_rng(SAMPLING_SEED),
                       variance=variance)
    return run_to_end(steps_run).x_prev


def sampling_parity(model: Any, session: ort.InferenceSession, spec: GraphSpec, T: int, schedule_kind: str,
                    guidance: float, conditioning: dict[str, Any],
                    variance: str = "fixed_large") -> list[dict[str, Any]]:
    """Final-image differences of full guided samplings through the torch and ONNX denoisers."""
    from diffusion_studio.core.images import to_uint8
    from diffusion_studio.core.schedule import make_schedule
    from diffusion_studio.inference.providers import ProviderInfo
    from diffusion_studio.inference.session import OrtDenoiser
    from diffusion_studio.training.denoiser import TorchDenoiser

    schedule = make_schedule(schedule_kind, T)
    *cond, source = _conditioning(spec, conditioning)
    shape = (1, spec.channels, spec.image_size, spec.image_size)
    info = ProviderInfo(requested="parity", active=session.get_providers()[0], fallback_reason=None,
                        onnxruntime_version=ort.__version__, model_file="unet.onnx")
    torch_denoiser, onnx_denoiser = TorchDenoiser(model), OrtDenoiser(session, info)
    runs = []
    for sampler, steps in SAMPLING_RUNS:
        steps = min(steps, T)
        ref = _final_image(torch_denoiser, schedule, shape, tuple(cond), guidance, sampler, steps, variance)
        got = _final_image(onnx_denoiser, schedule, shape, tuple(cond), guidance, sampler, steps, variance)
        diff = np.abs(got.astype(np.float64) - ref)
        pixels = np.abs(to_uint8(got).astype(np.int16) - to_uint8(ref).astype(np.int16))
        runs.append({"sampler": sampler, "steps": steps, "guidance": guidance, "seed": SAMPLING_SEED,
                     "conditioning": source, "max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
                     "max_abs_uint8": int(pixels.max())})
    return runs


def start_report(fp32_path: Path, bound: float, inputs: dict[str, Any],
                 **fields: Any) -> tuple[dict[str, Any], list[Runtime], list[str]]:
    """A parity report's head (bound, `fields`, inputs, providers, empty `network` and `sampling`),
    the runtimes that can open `fp32_path`, and the failures so far (none of them can)."""
    usable, unavailable = runtimes(fp32_path)
    report: dict[str, Any] = {
        "bound_max_abs": bound,
        **fields,
        "inputs": inputs,
        "providers": [r.provider for r in usable],
        "unavailable_providers": unavailable,
        "network": [],
        "sampling": [],
    }
    failures: list[str] = []
    if not usable:
        failures.append(f"no execution provider here can run {fp32_path.name}: "
                        + "; ".join(f"{p}: {r}" for p, r in unavailable.items()))
    return report, usable, failures


def validate_export(model: Any, folder: Path, spec: GraphSpec, *, T: int, schedule: str, guidance: float,
                    conditioning: dict[str, Any], fp16_file: str | None,
                    bound: float = PARITY_BOUND, variance: str = "fixed_large") -> dict[str, Any]:
    """The whole report (module docstring); `passed` is False when the fp32 bound or fp16 finiteness fails."""
    fp32_path = folder / "unet.onnx"
    report, usable, failures = start_report(
        fp32_path, bound, {"seed": INPUT_SEED, "timesteps": check_timesteps(T), "batch_sizes": list(BATCH_SIZES)})
    for runtime in usable:
        session = runtime.open(fp32_path)
        entry = {"provider": runtime.provider, "file": fp32_path.name, "gated": True,
                 **network_parity(model, session, spec, T)}
        entry["passed"] = entry["max_abs"] <= bound
        if not entry["passed"]:
            failures.append(f"{runtime.provider} max |Δε| {entry['max_abs']:.3g} > {bound:g}")
        report["network"].append(entry)
        for run in sampling_parity(model, session, spec, T, schedule, guidance, conditioning, variance):
            report["sampling"].append({"provider": runtime.provider, "file": fp32_path.name, **run})
        if fp16_file:
            report["network"].append(_fp16_entry(runtime, model, folder / fp16_file, spec, T, failures))
    report["passed"] = not failures
    report["failures"] = failures
    return report


def _fp16_entry(runtime: Runtime, model: Any, path: Path, spec: GraphSpec, T: int,
                failures: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {"provider": runtime.provider, "file": path.name, "gated": False}
    try:
        session = runtime.open(path)
    except Exception as exc:  # noqa: BLE001 - not every provider has fp16 kernels
        entry["skipped"] = f"cannot run here: {(str(exc).strip().splitlines() or ['?'])[-1][:200]}"
        return entry
    entry.update(network_parity(model, session, spec, T))
    entry["fp16_finite"] = finite = fp16_finite(session, spec, T)
    if not finite["finite"]:
        failures.append(f"{path.name} on {runtime.provider} gives NaN/Inf at t={finite['non_finite_timesteps'][:5]}")
    return entry


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable table of the report (what the CLI prints)."""
    if report.get("skipped"):
        return f"parity: skipped ({report['skipped']})"
    lines = [f"parity vs PyTorch (fp32 bound {report['bound_max_abs']:g} max |Δε|): "
             f"{'PASSED' if report['passed'] else 'FAILED'}"]
    for entry in report["network"]:
        if "skipped" in entry:
            lines.append(f"  {entry['file']:<16} {entry['provider']:<26} skipped: {entry['skipped']}")
            continue
        gate = "" if entry["gated"] else " (not gated)"
        lines.append(f"  {entry['file']:<16} {entry['provider']:<26} max {entry['max_abs']:.2e}  "
                     f"mean {entry['mean_abs']:.2e}{gate}")
        by_t: dict[int, float] = {}
        for case in entry["cases"]:
            by_t[case["t"]] = max(by_t.get(case["t"], 0.0), case["max_abs"])
        lines.append("    per t: " + ", ".join(f"t={t}: {v:.1e}" for t, v in by_t.items()))
        if "fp16_finite" in entry:
            f = entry["fp16_finite"]
            lines.append(f"    finite at all {f['timesteps_checked']} timesteps: {'yes' if f['finite'] else 'NO'}")
    for comp in report.get("components", []):  # a latent import's text encoder and VAE (exporter.latent_import)
        lines.append(f"  {comp['file']:<16} {comp['provider']:<26} max {comp['max_abs']:.2e}  "
                     f"mean {comp['mean_abs']:.2e}  (bound {comp['bound_max_abs']:.2g}"
                     f"{'' if comp['passed'] else ', FAILED'})")
    for run in report["sampling"]:
        lines.append(f"  sampling {run['sampler']:<9} {run['steps']:>3} steps w={run['guidance']:g} "
                     f"{run['provider']:<26} final image max {run['max_abs']:.2e} mean {run['mean_abs']:.2e} "
                     f"({run['max_abs_uint8']} of 255)")
    for provider, reason in report["unavailable_providers"].items():
        lines.append(f"  {provider}: not available here ({reason})")
    for failure in report.get("failures", []):
        lines.append(f"  FAILED: {failure}")
    return "\n".join(lines)


def record_report(report: dict[str, Any], folder: Path, names: list[str]) -> None:
    """A failed parity report raises ParityError (its failures, then the table); a passed one is
    written to the staged bundle as validation.json and added to `names`."""
    from exporter import bundle_writer as bw

    if not report["passed"]:
        raise ParityError(f"{'; '.join(report['failures'])}\n{format_report(report)}")
    bw.write_json_atomic(folder / bw.VALIDATION_JSON, report)
    names.append(bw.VALIDATION_JSON)

"""The loaded model, headless: a validated bundle with its pipeline, and how to describe it.

Loading never replaces the current model unless the new one loaded completely, so a
broken bundle leaves the previous model in place (the caller shows the reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffusion_studio.errors import BundleError, UsageError
from diffusion_studio.inference.bundle_loader import LoadedBundle, load_bundle
from diffusion_studio.inference.pipeline import Pipeline
from diffusion_studio.inference.providers import ProviderInfo, default_intra_op_threads, interactive_threads
from diffusion_studio.paths import default_model_dir


@dataclass
class LoadedModel:
    folder: Path
    bundle: LoadedBundle
    pipeline: Pipeline
    requested_device: str

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def provider_info(self) -> ProviderInfo:
        return self.bundle.provider_info

    @property
    def is_default(self) -> bool:
        return is_default_model(self.folder)


def is_default_model(folder: Path | str) -> bool:
    try:
        return Path(folder).resolve() == default_model_dir().resolve()
    except OSError:
        return False


def load_model(folder: Path | str, device: str) -> LoadedModel:
    """Load and validate a bundle on `device`; BundleError/UsageError with one sentence if it fails.

    The U-Net session leaves one core to the GUI thread (`interactive_threads`): with every
    core busy in ONNX Runtime, the event loop stalls and, on a loaded machine, the run slows.
    """
    path = Path(folder)
    try:
        with default_intra_op_threads(interactive_threads()):
            bundle = load_bundle(path, device)
    except UsageError:
        raise
    except Exception as exc:  # an unexpected loader failure still must not crash the app
        raise BundleError(f"The model bundle {path} could not be loaded ({exc}).") from exc
    return LoadedModel(path.resolve(), bundle, Pipeline(bundle), device)


def missing_default_message() -> str:
    return (
        f"The default model is not installed (expected at {default_model_dir()}). "
        "Open a model bundle with File ▸ Open model bundle… (Ctrl+O)."
    )


def fallback_message(info: ProviderInfo) -> str | None:
    """The sentence to show when CUDA was asked for explicitly but the CPU runs the model."""
    if info.requested == "cuda" and not info.on_cuda:
        reason = info.fallback_reason or "the CUDA execution provider is not available"
        return f"CUDA is not available ({reason}), so the model runs on the CPU."
    return None


def device_text(info: ProviderInfo) -> str:
    """Status-bar text: "CPU · CPUExecutionProvider", plus "(CUDA unavailable)" after a fallback."""
    text = f"{info.device_label} · {info.active}"
    if info.fallback_reason and info.requested in ("cuda", "auto"):
        text += " (CUDA unavailable)"
    return text

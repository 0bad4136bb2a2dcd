"""Models, headless (QtCore, no widgets): the loaded bundle with its pipeline, and the policy of
which bundle is loaded when.

`ModelLibrary` decides what `MainWindow` only shows: at start-up the bundle given on the
command line or else the default model (a missing or broken one never stops the window: the
view says why); the model picker lists the default model and the recent bundles (a recent
bundle that has gone is dropped when it fails to open); loading another bundle that fails
keeps the current model; on the first launch and on every switch to another model the form
takes that model's sampler defaults; a CUDA request that runs on the CPU is said once (in the
status bar at start-up, a warning later).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from diffusion_studio.errors import BundleError, UsageError
from diffusion_studio.inference.bundle_loader import LoadedBundle
from diffusion_studio.inference.latent import LatentModel, make_pipeline, open_model
from diffusion_studio.inference.pipeline import Pipeline
from diffusion_studio.inference.providers import ProviderInfo, default_intra_op_threads, interactive_threads
from diffusion_studio.paths import default_model_dir
from diffusion_studio.ui.persistence import AppSettings

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    folder: Path
    bundle: LoadedBundle  # or an inference.latent.LatentModel, which has the surface the GUI reads
    pipeline: Pipeline  # or an inference.latent.LatentPipeline (the same surface)
    requested_device: str

    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def provider_info(self) -> ProviderInfo:
        return self.bundle.provider_info

    @property
    def is_latent(self) -> bool:
        """A latent diffusion model (Stable-Diffusion family): the Forward tab does not probe it."""
        return isinstance(self.bundle, LatentModel)

    @property
    def is_default(self) -> bool:
        return is_default_model(self.folder)

    @property
    def vocabulary(self) -> tuple[str, ...] | None:
        """The words the model's captions used (model.json `vocabulary`); None: not declared."""
        return getattr(self.bundle, "vocabulary", None)

    @property
    def conditioning(self) -> str:
        """"text" for a text-conditioned model ("class" or "none" for bundles that declare it)."""
        kind = getattr(self.bundle.spec.conditioning, "kind", "text") or "text"
        return str(getattr(kind, "value", kind))  # core.bundle's ConditioningKind, or a plain str


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
            bundle = open_model(path, device)  # a LatentModel for a latent bundle or an Optimum ONNX folder
    except UsageError:
        raise
    except Exception as exc:  # an unexpected loader failure still must not crash the app
        raise BundleError(f"The model bundle {path} could not be loaded ({exc}).") from exc
    return LoadedModel(path.resolve(), bundle, make_pipeline(bundle), device)


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


def device_note(info: ProviderInfo) -> str:
    """The Device box's line: what runs, "Auto → CPU (CUDA libraries missing)" after a fallback."""
    requested = {"auto": "Auto", "cuda": "CUDA", "cpu": "CPU"}.get(info.requested, info.requested)
    text = f"{requested} → {info.device_label}"
    if info.fallback_reason and info.requested in ("cuda", "auto"):
        reason = info.fallback_reason
        if len(reason) > 40 and " (" in reason:  # the library's own words go to the tooltip
            reason = reason.split(" (", 1)[0]
        text += f" ({reason})"
    return text


@dataclass(frozen=True)
class ModelEntry:
    """One line of the model picker."""

    label: str
    folder: str
    tooltip: str


class ModelLibrary(QObject):
    """The loaded model, the ones the user can pick, and what happens when one is opened."""

    modelChanged = Signal(object, bool)  # LoadedModel now active, whether the form takes its defaults
    entriesChanged = Signal(object, object)  # list[ModelEntry] (default model first), current folder or None
    unavailable = Signal(str)  # at start-up no model could be loaded: why (shown in the view, no dialog)
    loadFailed = Signal(str, str)  # title, sentence: the bundle the user opened failed (the current one stays)
    warning = Signal(str, str)  # title, sentence: the model runs, but not as asked (CUDA fell back to the CPU)
    status = Signal(str)  # a sentence for the status bar

    def __init__(self, settings: AppSettings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self._model: LoadedModel | None = None
        # First launch (nothing saved yet): the form takes the model's own sampler defaults.
        self._first_launch = not settings.has_form()

    @property
    def current(self) -> LoadedModel | None:
        return self._model

    @staticmethod
    def startup_folder(model_path: str | Path | None) -> Path:
        """What to load at start-up: the bundle asked for, else the default model."""
        return Path(model_path) if model_path else default_model_dir()

    def entries(self) -> list[ModelEntry]:
        """The default model (named once loaded), then the recent bundles, newest first."""
        default, model = default_model_dir(), self._model
        label = "Default model" + ("" if default.exists() else " (missing)")
        if model is not None and model.is_default:
            label = f"{model.name} (default)"
        entries = [ModelEntry(label, str(default), str(default))]
        current = str(model.folder) if model is not None else None
        for folder in self.settings.recent_bundles():
            if not is_default_model(folder):
                name = model.name if model is not None and folder == current else Path(folder).name
                entries.append(ModelEntry(name, folder, folder))
        return entries

    def refresh(self) -> None:
        """Announce the picker's entries (after a change, or to fill a new view)."""
        self.entriesChanged.emit(self.entries(), str(self._model.folder) if self._model else None)

    def open(self, folder: Path, device: str, *, startup: bool = False) -> bool:
        """Load the bundle in `folder` on `device`; True if it is now the active model.

        On failure the current model stays and the reason goes out: `unavailable` at
        start-up (the default model may simply not be installed), `loadFailed` later.
        """
        try:
            model = load_model(folder, device)
        except UsageError as exc:
            log.warning("Could not load %s: %s", folder, exc)
            if startup:
                missing = is_default_model(folder) and not folder.exists()
                self.unavailable.emit(missing_default_message() if missing else str(exc))
                self.refresh()
            else:
                if not folder.exists():  # a recent bundle that was moved or deleted
                    self.settings.remove_recent_bundle(folder)
                    self.refresh()
                self.loadFailed.emit("Could not open the model", str(exc))
            return False
        previous = self._model.folder if self._model is not None else None
        self._model = model
        take_defaults = self._first_launch or (previous is not None and previous != model.folder)
        self._first_launch = False
        self.modelChanged.emit(model, take_defaults)
        if not model.is_default:
            self.settings.add_recent_bundle(model.folder)
        self.refresh()
        fallback = fallback_message(model.provider_info)
        if fallback and startup:  # no modal dialog before the window is even shown
            self.status.emit(fallback)
        elif fallback:
            self.warning.emit("CUDA unavailable", fallback)
        return True

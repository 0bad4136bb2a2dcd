"""The Generate workspace's state, headless (QtCore, no widgets): the form's settings, the model
and the run in flight, each with a change signal.

The views subscribe and never keep a copy of their own (napari's model / `_qt` view split):
the settings panel shows `settingsChanged` and writes edits back with `set_settings`; the
buttons follow `modelChanged` and `runningChanged`; the preview follows the run's signals.
A run is the generator worker of `worker.py` (superqt's pattern): it iterates
`Pipeline.iterate` in a QThread, checks a cancel flag before every network call and hands
its frames to this object on the GUI thread.

img2img: the state also holds the init image (`InitImage`, not part of the settings value:
it is pixels, not a form field) with `initImageChanged`; a run fits it to the model and
passes it with `settings.strength` into the request, and every saved PNG names it.
"""

from __future__ import annotations

import datetime
import functools
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from diffusion_studio.core.images import to_uint8
from diffusion_studio.errors import UsageError
from diffusion_studio.inference.pipeline import GenerationRequest
from diffusion_studio.ui.generate.history import HistoryEntry, HistoryStore
from diffusion_studio.ui.generate.init_image import InitImage, recorded_file, recorded_name, recorded_sha256
from diffusion_studio.ui.generate.settings import GenerationSettings
from diffusion_studio.ui.generate.worker import MAX_PREVIEW_HZ, GenerationController, RunResult

if TYPE_CHECKING:
    from diffusion_studio.inference.pipeline import Pipeline
    from diffusion_studio.ui.models import LoadedModel

log = logging.getLogger(__name__)

KEPT_INIT_IMAGES = 8  # init images of this session Reuse can find again (a decoded photo is large)


def request_from_settings(
    settings: GenerationSettings, init_image: np.ndarray | None = None, conditioning: str = "text",
    size: tuple[int, int] | None = None,
) -> GenerationRequest:
    """The run's request; img2img (`init_image` fitted to the model, float [1, C, H, W]) with the
    form's strength, else text-to-image (strength 1: the form's strength is kept for later).

    A model without text conditioning (`conditioning` "class" or "none") gets no prompt and no
    guidance (the form shows them disabled), and a class model the form's class. `size` (width,
    height): a latent model's output size (pixel models make their own size only)."""
    width, height = size if size is not None else (None, None)
    if conditioning != "text":
        return GenerationRequest(
            sampler=settings.sampler,
            steps=settings.steps,
            seed=settings.seed,
            batch=settings.batch,
            init_image=init_image,
            strength=settings.strength if init_image is not None else 1.0,
            class_label=settings.class_label if conditioning == "class" else None,
        )
    return GenerationRequest(
        prompt=settings.prompt,
        negative_prompt=settings.negative_prompt,
        sampler=settings.sampler,
        steps=settings.steps,
        guidance=settings.guidance,
        seed=settings.seed,
        batch=settings.batch,
        init_image=init_image,
        strength=settings.strength if init_image is not None else 1.0,
        width=width,
        height=height,
    )


def save_run(
    store: HistoryStore, pipeline: Pipeline, device_label: str, result: RunResult, extra: dict[str, Any] | None = None
) -> list[HistoryEntry]:
    """Write every image of a finished run to the history with its full metadata (plus `extra`:
    the init image's name and hash).

    Runs in the worker thread. Image i of a batch records seed + i, so it can be made
    again alone.
    """
    request = result.request
    if request is None:
        return []
    created = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    entries: list[HistoryEntry] = []
    for i, image in enumerate(to_uint8(result.x_0)):
        metadata: dict[str, Any] = pipeline.image_metadata(request, i, result.elapsed_s)
        metadata["created"] = created
        metadata["device"] = device_label
        metadata.update(extra or {})
        entries.append(store.add(image, metadata, index=i))
    return entries


class GenerateState(QObject):
    """Settings, model and run of the Generate workspace; finished images go to `store`."""

    settingsChanged = Signal(object)  # GenerationSettings
    modelChanged = Signal(object)  # LoadedModel | None
    initImageChanged = Signal(object)  # InitImage | None (`init_image_note` says why it is None)
    initImageFileWanted = Signal(object, str)  # Path, SHA-256: Reuse needs this file read (a view's thread)
    runningChanged = Signal(bool)  # a run started (True) or its thread has stopped (False)
    refused = Signal(str, str)  # title, sentence: Generate could not start a run
    # The run, on the GUI thread:
    runStarted = Signal()
    preview = Signal(object)  # Frame (coalesced: at most `preview_hz` per second)
    progress = Signal(object)  # Progress
    finished = Signal(object)  # RunResult (the images are already in the history)
    cancelled = Signal()
    failed = Signal(str)  # one sentence
    idle = Signal()  # the worker thread has stopped (after finished, cancelled or failed)

    def __init__(self, store: HistoryStore, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self._settings = GenerationSettings()
        self._model: LoadedModel | None = None
        self._init_image: InitImage | None = None
        self._init_images: dict[str, InitImage] = {}  # every init image of this session, by SHA-256
        self.init_image_note = ""  # e.g. the restored image's init image is no longer available
        self.preview_hz = MAX_PREVIEW_HZ  # previews per second at most (coalesced in the worker)
        self.controller = GenerationController(self)
        c = self.controller
        c.started.connect(self._on_started)
        c.preview.connect(self.preview)
        c.progress.connect(self.progress)
        c.finished.connect(self.finished)
        c.cancelled.connect(self.cancelled)
        c.failed.connect(self.failed)
        c.idle.connect(self._on_idle)

    # --- settings --------------------------------------------------------------------------
    @property
    def settings(self) -> GenerationSettings:
        return self._settings

    def set_settings(self, settings: GenerationSettings) -> None:
        if settings != self._settings:
            self._settings = settings
            self.settingsChanged.emit(settings)

    def update(self, **changes: Any) -> None:
        """Change some fields, e.g. `update(seed=7, seed_locked=True)`."""
        self.set_settings(replace(self._settings, **changes))

    def restore(self, metadata: dict[str, Any]) -> list[str]:
        """Take the generation parameters of PNG metadata (see `GenerationSettings.restore`)
        and its init image when it is still available; returns the notes on what was kept,
        clamped or missing. UsageError if the metadata holds none."""
        settings, notes = self._settings.restore(metadata, self.T)
        notes += self._restore_init_image(metadata)
        self.set_settings(settings)
        return notes

    # --- img2img ---------------------------------------------------------------------------
    @property
    def init_image(self) -> InitImage | None:
        return self._init_image

    def set_init_image(self, init: InitImage | None, note: str = "") -> None:
        """Start the next runs from `init` (img2img), or from noise (None; `note` says why)."""
        if init is not None:  # the most recently used last; the oldest are forgotten
            self._init_images.pop(init.sha256, None)
            self._init_images[init.sha256] = init
            while len(self._init_images) > KEPT_INIT_IMAGES:
                del self._init_images[next(iter(self._init_images))]
        if init is self._init_image and note == self.init_image_note:
            return
        self._init_image, self.init_image_note = init, note
        self.initImageChanged.emit(init)

    def _restore_init_image(self, metadata: dict[str, Any]) -> list[str]:
        """An img2img PNG: its init image from this session, or its file (read by the view's loader
        thread, `initImageFileWanted`), else a note; a text-to-image PNG: no init image (so
        Generate makes that image again)."""
        if metadata.get("strength") is None:
            if self._init_image is None:
                return []
            self.set_init_image(None)
            return ["init image cleared (the image was made from text alone)"]
        sha, name = recorded_sha256(metadata), recorded_name(metadata)
        if sha in self._init_images:
            found = self._init_images[sha]
            self.set_init_image(found)
            return [f"init image {found.source}"]
        path = recorded_file(metadata)
        if path is not None:
            self.set_init_image(None, f"Reading {name}…")
            self.initImageFileWanted.emit(path, sha)
            return [f"init image {name} (from its file)"]
        note = (f"The init image {name} is no longer available: open it again to make this image."
                if name else "The image was made from an init image it does not name.")
        self.set_init_image(None, note)
        return [note[0].lower() + note[1:-1]]

    def use_model_defaults(self) -> None:
        """Sampler, steps and guidance from the loaded bundle's model.json sampler_defaults."""
        if self._model is None:
            return
        spec = self._model.bundle.spec
        sampler = getattr(spec.sampler, "value", spec.sampler)
        self.update(sampler=str(sampler), steps=spec.steps, guidance=spec.guidance)

    # --- model -----------------------------------------------------------------------------
    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def set_model(self, model: LoadedModel | None) -> None:
        self._model = model
        self.modelChanged.emit(model)

    @property
    def T(self) -> int | None:
        """The loaded model's number of diffusion steps (the most sampler steps), None without one."""
        return self._model.bundle.T if self._model is not None else None

    # --- runs ------------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self.controller.is_running

    def can_generate(self) -> bool:
        return self._model is not None and not self.is_running

    def generate(self) -> bool:
        """Start a run with the current settings (an unlocked seed is re-rolled first).

        `Pipeline.iterate` resolves the request here (the bundle's checks, the prompt encoded);
        False, with `refused` saying why, when there is no model or a setting is out of range.
        """
        if self.is_running:
            return False
        model = self._model
        if model is None:
            self.refused.emit("No model", "Open a model bundle before generating.")
            return False
        settings = self._settings.for_next_run()
        self.set_settings(settings)
        init = self._init_image
        try:  # resolved and checked once, here: a bad value is a dialog before any thread starts
            bundle = model.bundle
            init_array = None if init is None else init.model_array(bundle.image_size, bundle.channels)
            size = None
            if model.is_latent:  # the form's Width/Height (None: the model's default size)
                size = (settings.width or bundle.image_size, settings.height or bundle.image_size)
                if init is not None and size != (bundle.image_size, bundle.image_size):
                    from diffusion_studio.inference.latent import latent_init_image

                    init_array = latent_init_image(init.image, *size)  # center-cropped to width:height
            request = request_from_settings(settings, init_array, model.conditioning, size)
            sampling = model.pipeline.iterate(request)
        except UsageError as exc:
            self.refused.emit("Cannot generate", str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - e.g. the text encoder failed: a dialog, logged
            log.exception("Generation could not start")
            self.refused.emit("Generation failed", f"Generation failed: {exc}")
            return False
        finish = functools.partial(save_run, self.store, model.pipeline, model.provider_info.device_label,
                                   extra=init.metadata() if init is not None else None)
        self.controller.start(model.pipeline, sampling, self.preview_hz, finish)
        return True  # `runStarted` follows from the worker thread

    def cancel(self) -> bool:
        """Stop the run in flight before its next network call; False if none runs."""
        if not self.is_running:
            return False
        self.controller.cancel()
        return True

    def shutdown(self) -> bool:
        """Stop a run in flight (window closing); True once no thread is left."""
        return self.controller.shutdown()

    def _on_started(self) -> None:
        self.runningChanged.emit(True)
        self.runStarted.emit()

    def _on_idle(self) -> None:
        self.runningChanged.emit(False)
        self.idle.emit()

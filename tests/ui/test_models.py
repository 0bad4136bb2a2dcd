"""ModelLibrary headless: what loads at start-up, the picker's entries, recent bundles, failures,
and when the form takes a model's sampler defaults."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import diffusion_studio.ui.models as models
from diffusion_studio.ui.models import ModelLibrary
from diffusion_studio.ui.persistence import AppSettings


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelLibrary, dict[str, list]]:
    monkeypatch.setattr(models, "default_model_dir", lambda: tmp_path / "resources" / "models" / "shapes")
    lib = ModelLibrary(AppSettings())
    seen: dict[str, list] = {"changed": [], "entries": [], "unavailable": [], "failed": [], "status": []}
    lib.modelChanged.connect(lambda model, defaults: seen["changed"].append((model.name, defaults)))
    lib.entriesChanged.connect(lambda entries, current: seen["entries"].append(([e.label for e in entries], current)))
    lib.unavailable.connect(seen["unavailable"].append)
    lib.loadFailed.connect(lambda title, text: seen["failed"].append((title, text)))
    lib.status.connect(seen["status"].append)
    return lib, seen


def test_start_up_without_the_default_model_says_so(library, tmp_path: Path) -> None:
    lib, seen = library
    folder = lib.startup_folder(None)
    assert folder == tmp_path / "resources" / "models" / "shapes" and lib.startup_folder("b") == Path("b")
    assert not lib.open(folder, "cpu", startup=True)
    assert lib.current is None and seen["failed"] == []  # no dialog before the window is shown
    assert "default model is not installed" in seen["unavailable"][0]
    assert seen["entries"] == [(["Default model (missing)"], None)]


def test_defaults_on_first_launch_and_on_a_switch_recent_bundles(library, tiny_bundle: Path, tmp_path: Path) -> None:
    lib, seen = library
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    assert lib.open(tiny_bundle, "cpu", startup=True)
    assert lib.open(tiny_bundle, "cpu")  # the same model again (e.g. another device): the form stays
    assert lib.open(other, "cpu")
    assert seen["changed"] == [("tiny", True), ("tiny", False), ("tiny", True)]
    assert lib.settings.recent_bundles() == [str(other.resolve()), str(tiny_bundle.resolve())]
    labels, current = seen["entries"][-1]
    assert labels == ["Default model (missing)", "tiny", tiny_bundle.name] and current == str(other.resolve())

    shutil.rmtree(other)  # a recent bundle that has gone: dropped, and the current model stays
    assert not lib.open(other, "cpu")
    assert seen["failed"][-1][0] == "Could not open the model" and lib.current.folder == other.resolve()
    assert lib.settings.recent_bundles() == [str(tiny_bundle.resolve())]


def test_saved_settings_mean_no_first_launch(library, tiny_bundle: Path) -> None:
    lib, seen = library
    lib.settings.set_form(lib.settings.form())
    again = ModelLibrary(lib.settings)
    changed: list[bool] = []
    again.modelChanged.connect(lambda _model, defaults: changed.append(defaults))
    assert again.open(tiny_bundle, "cpu", startup=True) and changed == [False]

"""The data folder: one folder named after the app; an old doubled folder is moved in, losing nothing."""

from __future__ import annotations

from pathlib import Path

from diffusion_studio.ui.persistence import DATA_DIR_ENV, DATA_FOLDER, data_dir, migrate_folder


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_data_folder_is_one_folder_named_after_the_app(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    folder = data_dir(tmp_path)
    assert folder == tmp_path / "diffusion-studio" == tmp_path / DATA_FOLDER and folder.is_dir()
    assert [p.name for p in tmp_path.iterdir()] == ["diffusion-studio"]


def test_a_doubled_legacy_folder_is_moved_in_without_losing_history(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    legacy = tmp_path / "DiffusionStudio" / "Diffusion Studio"
    _write(legacy / "history" / "a.png", "old a")
    _write(legacy / "history" / "same.png", "old same")
    _write(legacy / "runs" / "run-1" / "events.jsonl", "{}\n")
    _write(legacy / "diffusion-studio.log", "old log")
    _write(tmp_path / "diffusion-studio" / "history" / "same.png", "new same")  # a name taken in both

    folder = data_dir(tmp_path)
    assert (folder / "history" / "a.png").read_text() == "old a"
    assert (folder / "history" / "same.png").read_text() == "new same"  # never overwritten
    assert (folder / "history" / "same (migrated 1).png").read_text() == "old same"  # kept beside it
    assert (folder / "runs" / "run-1" / "events.jsonl").read_text() == "{}\n"
    assert (folder / "diffusion-studio.log").read_text() == "old log"
    assert not (tmp_path / "DiffusionStudio").exists()  # the doubled folder is gone once empty
    assert data_dir(tmp_path) == folder  # a second launch: nothing left to move


def test_a_migration_that_fails_midway_keeps_every_file(tmp_path, monkeypatch) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    _write(old / "a.png", "a")
    _write(old / "b.png", "b")
    import shutil

    real_move = shutil.move

    def flaky_move(src: str, dst: str) -> str:
        if src.endswith("b.png"):
            raise OSError(13, "Permission denied")
        return real_move(src, dst)

    monkeypatch.setattr(shutil, "move", flaky_move)
    moved = migrate_folder(old, new)
    assert moved == [new / "a.png"] and (new / "a.png").read_text() == "a"
    assert (old / "b.png").read_text() == "b"  # left where it was, not lost


def test_the_env_override_wins(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "custom"))
    assert data_dir() == tmp_path / "custom"

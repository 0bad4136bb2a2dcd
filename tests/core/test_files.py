"""core/files.py: read_json_file (hostile JSON files) and resolve_inside (folder confinement)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diffusion_studio.core.files import MAX_JSON_DEPTH, read_json_file, resolve_inside
from diffusion_studio.errors import BundleError, UsageError


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "x.json"
    path.write_bytes(data)
    return path


def test_reads_plain_json_and_accepts_a_bom(tmp_path: Path) -> None:
    assert read_json_file(_write(tmp_path, b'{"a": [1, 2]}')) == {"a": [1, 2]}
    assert read_json_file(_write(tmp_path, b'\xef\xbb\xbf{"a": 1}')) == {"a": 1}


def test_deep_nesting_is_one_sentence(tmp_path: Path) -> None:
    path = _write(tmp_path, b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(UsageError) as e:
        read_json_file(path, "model.json")
    assert str(e.value) == (f"model.json {str(path)!r} nests arrays or objects too deeply to be read "
                            f"(the limit is {MAX_JSON_DEPTH} levels).")


def test_nesting_that_json_parses_is_still_bounded(tmp_path: Path) -> None:
    path = _write(tmp_path, b"[" * 65 + b"]" * 65)
    with pytest.raises(UsageError, match=r"nests arrays or objects too deeply .*limit is 64 levels"):
        read_json_file(path)
    assert read_json_file(_write(tmp_path, b"[" * 64 + b"]" * 64)) == eval("[" * 64 + "]" * 64)


def test_error_class_is_the_callers(tmp_path: Path) -> None:
    with pytest.raises(BundleError,
                       match=r"^encoder.json '.*x.json' is not valid JSON: Expecting value at line 1, column 1\.$"):
        read_json_file(_write(tmp_path, b"nope"), "encoder.json", error=BundleError)


@pytest.mark.parametrize("data, message", [
    (b'{"a": 1,\n  oops}', "is not valid JSON: Expecting property name enclosed in double quotes at line 2, column 3."),
    (b'{"a": "\xff"}', "is not UTF-8 text (invalid byte at offset 7)."),
    (b"1" * 5000, "holds a number too long to be read."),
    (b"", "is not valid JSON: Expecting value at line 1, column 1."),
])
def test_bad_content(tmp_path: Path, data: bytes, message: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(UsageError) as e:
        read_json_file(path)
    assert str(e.value) == f"{str(path)!r} {message}"


def test_too_large(tmp_path: Path) -> None:
    path = _write(tmp_path, b" " * 101 + b"{}")
    with pytest.raises(UsageError) as e:
        read_json_file(path, "report", max_bytes=100)
    assert str(e.value) == f"report {str(path)!r} is too large to be read: 103 bytes, the limit is 100."


def test_missing_folder_fifo_device(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^'.*nope.json' does not exist\.$"):
        read_json_file(tmp_path / "nope.json")
    with pytest.raises(UsageError, match=r"is a folder, not a JSON file\.$"):
        read_json_file(tmp_path)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(UsageError, match=r"'.*fifo' is not a regular file\.$"):
            read_json_file(tmp_path / "fifo")  # must not block
    if Path("/dev/zero").exists():
        with pytest.raises(UsageError, match=r"^'/dev/zero' is not a regular file\.$"):
            read_json_file("/dev/zero")


def test_unreadable(tmp_path: Path) -> None:
    path = _write(tmp_path, b"{}")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(UsageError, match=r"^cannot read '.*x.json': Permission denied\.$"):
            read_json_file(path)
    finally:
        path.chmod(0o600)


def test_resolve_inside(tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "a.onnx").write_bytes(b"x")
    (tmp_path / "outside.onnx").write_bytes(b"x")
    (folder / "inner_link.onnx").symlink_to("a.onnx")
    (folder / "outer_link.onnx").symlink_to(tmp_path / "outside.onnx")
    assert resolve_inside(folder, "a.onnx") == (folder / "a.onnx").resolve()
    assert resolve_inside(folder, "inner_link.onnx") == (folder / "a.onnx").resolve()
    assert resolve_inside(folder, "not_yet.json") == (folder / "not_yet.json").resolve()
    with pytest.raises(BundleError) as e:
        resolve_inside(folder, "outer_link.onnx", "unet.file 'outer_link.onnx'", error=BundleError)
    assert str(e.value) == (f"unet.file 'outer_link.onnx' in {str(folder)!r} leads outside the folder "
                            f"(to {str((tmp_path / 'outside.onnx').resolve())!r}); refusing to read it.")
    with pytest.raises(UsageError, match=r"^'\.\./outside\.onnx' in .* leads outside the folder"):
        resolve_inside(folder, "../outside.onnx")
    with pytest.raises(UsageError, match=r"^'\.' in .* names the folder itself, not a file in it\.$"):
        resolve_inside(folder, ".")

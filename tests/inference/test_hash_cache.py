"""inference.hash_cache: a file's sha256 is reused only while the file is unchanged."""

from __future__ import annotations

import hashlib
import json

import pytest

from diffusion_studio.errors import BundleError
from diffusion_studio.inference import hash_cache


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(hash_cache.CACHE_ENV, str(folder))
    return folder


def _no_hashing(*args, **kwargs):
    raise AssertionError("the file was hashed again")


def test_digest_is_remembered_and_reused(cache_dir, tmp_path, monkeypatch):
    f = tmp_path / "encoder.onnx"
    f.write_bytes(b"x" * 3_000_000)
    expected = hashlib.sha256(f.read_bytes()).hexdigest()
    assert hash_cache.cached_sha256(f) == expected
    entry = json.loads((cache_dir / hash_cache.CACHE_FILE).read_text())[str(f.resolve())]
    assert entry["sha256"] == expected and entry["size"] == 3_000_000
    monkeypatch.setattr(hash_cache, "sha256_file", _no_hashing)
    assert hash_cache.cached_sha256(f) == expected  # from the cache: the file is not read


def test_a_changed_file_is_hashed_again(cache_dir, tmp_path):
    f = tmp_path / "encoder.onnx"
    f.write_bytes(b"a" * 1000)
    first = hash_cache.cached_sha256(f)
    stat = f.stat()
    with open(f, "r+b") as handle:  # same size, written in place, mtime set back: ctime still moves
        handle.write(b"b")
    import os

    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = hash_cache.cached_sha256(f)
    assert second == hashlib.sha256(b"b" + b"a" * 999).hexdigest() != first


def test_a_broken_or_unwritable_cache_only_costs_the_hashing(tmp_path, monkeypatch):
    f = tmp_path / "tokenizer.json"
    f.write_text("{}")
    expected = hashlib.sha256(b"{}").hexdigest()
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / hash_cache.CACHE_FILE).write_text("not json [")
    monkeypatch.setenv(hash_cache.CACHE_ENV, str(folder))
    assert hash_cache.cached_sha256(f) == expected
    assert json.loads((folder / hash_cache.CACHE_FILE).read_text())[str(f.resolve())]["sha256"] == expected
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(hash_cache.CACHE_ENV, str(blocker / "below-a-file"))  # cannot be created
    assert hash_cache.cached_sha256(f) == expected


def test_a_missing_file_is_the_callers_one_sentence_error(cache_dir, tmp_path):
    with pytest.raises(BundleError, match="The text encoder file .* cannot be read"):
        hash_cache.cached_sha256(tmp_path / "gone.onnx", "text encoder file", error=BundleError)

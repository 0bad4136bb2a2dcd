"""The shared text encoder: tokenizer + ONNX MiniLM -> token embeddings and mask."""

from pathlib import Path

import numpy as np
import pytest

from diffusion_studio.errors import BundleError
from diffusion_studio.inference.text_encoder import TextEncoder, replace_undecodable


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(max_tokens=16)


def test_shapes_and_mask(encoder: TextEncoder) -> None:
    context, mask = encoder.encode(["", "a red circle", "a large red circle in the top left"])
    assert context.shape == (3, 16, 384) and context.dtype == np.float32
    assert mask.dtype == np.float32
    # "" -> [CLS] [SEP]; "a red circle" -> [CLS] a red circle [SEP]
    assert mask.sum(axis=1).tolist() == [2.0, 5.0, 10.0]
    assert np.all(mask[:, :2] == 1.0) and np.all(mask[0, 2:] == 0.0)
    # different prompts give clearly different embeddings of their content tokens
    assert np.abs(context[1, 1:4] - context[2, 1:4]).max() > 0.05


def test_batch_and_cache_do_not_change_embeddings(encoder: TextEncoder) -> None:
    alone, _ = encoder.encode(["a blue square"])
    batched, _ = encoder.encode(["a green triangle", "a blue square", "an orange circle"])
    np.testing.assert_array_equal(alone[0], batched[1])
    small = TextEncoder(max_tokens=16, cache_size=2)
    many, _ = small.encode(["a", "b", "c", "a"])  # more new prompts than the cache holds
    np.testing.assert_array_equal(many[0], many[3])
    np.testing.assert_array_equal(small.encode(["c"])[0][0], many[2])


def test_long_prompt_is_truncated_with_a_warning(encoder: TextEncoder) -> None:
    with pytest.warns(UserWarning, match="longer than 16 tokens"):
        context, mask = encoder.encode(["red " * 5000])
    assert mask.sum() == 16 and np.isfinite(context).all()


def test_unicode_prompts(encoder: TextEncoder) -> None:
    context, mask = encoder.encode(["🔴 دائرة حمراء", "עיגול אדום"])
    assert np.isfinite(context).all() and mask.sum(axis=1).min() >= 3


def test_missing_files_raise_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="text encoder file .* is missing"):
        TextEncoder(tmp_path)
    (tmp_path / "text_encoder.onnx").write_bytes(b"not onnx")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(BundleError):
        TextEncoder(tmp_path)


def _linked_encoder_folder(folder: Path) -> Path:
    """A folder whose encoder and tokenizer are symlinks to the shared ones (no 45 MB copy)."""
    from diffusion_studio.paths import text_encoder_dir

    for name in ("text_encoder.onnx", "tokenizer.json"):
        (folder / name).symlink_to(text_encoder_dir() / name)
    return folder


def test_invalid_encoder_json_is_one_sentence(tmp_path: Path) -> None:
    folder = _linked_encoder_folder(tmp_path)
    (folder / "encoder.json").write_text('{"embedding_dim": 384,')
    with pytest.raises(BundleError) as e:
        TextEncoder(folder)
    assert str(e.value) == (f"the text encoder's encoder.json {str(folder / 'encoder.json')!r} is not valid JSON: "
                            "Expecting property name enclosed in double quotes at line 1, column 23.")
    (folder / "encoder.json").write_text('"just a string"')
    with pytest.raises(BundleError) as e:
        TextEncoder(folder)
    assert str(e.value) == (f"the text encoder's encoder.json {str(folder / 'encoder.json')!r} "
                            "must hold a JSON object, got str.")


def test_encoder_json_is_read(tmp_path: Path) -> None:
    folder = _linked_encoder_folder(tmp_path)
    (folder / "encoder.json").write_text('{"model": "m", "embedding_dim": 384}')
    assert TextEncoder(folder, max_tokens=8).info == {"model": "m", "embedding_dim": 384}


def test_confined_encoder_refuses_files_outside_its_folder(tmp_path: Path) -> None:
    from diffusion_studio.paths import text_encoder_dir

    folder = _linked_encoder_folder(tmp_path)
    with pytest.raises(BundleError) as e:
        TextEncoder(folder, confine=True)
    target = (text_encoder_dir() / "text_encoder.onnx").resolve()
    assert str(e.value) == (f"the text encoder file 'text_encoder.onnx' in {str(folder)!r} leads outside the folder "
                            f"(to {str(target)!r}); refusing to read it.")


def test_undecodable_bytes_become_u_fffd_instead_of_a_type_error(encoder: TextEncoder) -> None:
    # `printf 'a\377 circle'` as an argv: Python hands over the byte 0xFF as the lone surrogate U+DCFF.
    raw = "a\udcff circle"
    assert replace_undecodable(raw) == ("a\ufffd circle", 1)
    assert replace_undecodable("b\udcff\udcfe \ud800") == ("b\ufffd\ufffd \ufffd", 3)
    assert replace_undecodable("🔴 a circle") == ("🔴 a circle", 0)
    context, mask = encoder.encode([raw, "\udcff"])
    clean_context, clean_mask = encoder.encode(["a\ufffd circle", "\ufffd"])
    np.testing.assert_array_equal(context, clean_context)
    np.testing.assert_array_equal(mask, clean_mask)
    ids, _ = encoder.tokenize([raw])
    np.testing.assert_array_equal(ids, encoder.tokenize(["a\ufffd circle"])[0])

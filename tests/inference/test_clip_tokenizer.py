"""inference.clip_tokenizer: the CLIP tokenizer built from vocab.json + merges.txt gives transformers' ids.

The reference is transformers' CLIPTokenizer called as Stable Diffusion's pipelines call it
(padding="max_length", truncation=True, max_length=77), on the tiny vocabulary of
tests/latent_models.py, for SD 1's pad token (<|endoftext|>) and SD 2's ("!").
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared latent_models fixture module
from latent_models import BOS, EOS, clip_vocab_and_merges, load_clip_tokenizer, write_clip_tokenizer_files  # noqa: E402

from diffusion_studio.errors import BundleError  # noqa: E402
from diffusion_studio.inference.clip_tokenizer import (  # noqa: E402
    build_clip_tokenizer,
    clip_tokenizer_from_folder,
    encode,
    padding_of,
    save,
)

PROMPTS = [
    "the cat", "A PHOTO of a Red Dog!!", "  spaces\tand\nnewlines  ", "don't you'll we've I'm they'd", "123 4567 cats",
    "café naïve résumé", "日本語のテキスト", "emoji 🐱🐶 party", "a,b;c.d:e", "(((masterpiece))), best-quality",
    "", "x" * 300, " ".join(["the cat"] * 60), "THE\u00a0CAT", "e\u0301 composed", "ﬁ ligature", "<|endoftext|> inside",
    "it's the sun's sky", "quotes \"double\" and 'single'", "ÄÖÜ ß", "\u200b zero width", "green tree at night!?",
]


@pytest.mark.parametrize("pad", [EOS, "!"])
def test_ids_equal_transformers(tmp_path: Path, pad: str) -> None:
    folder = write_clip_tokenizer_files(tmp_path / "tokenizer", pad)
    reference = load_clip_tokenizer(folder)
    ours = clip_tokenizer_from_folder(folder)
    want = [reference(p, padding="max_length", max_length=77, truncation=True).input_ids for p in PROMPTS]
    assert encode(ours, PROMPTS) == want
    assert all(len(ids) == 77 for ids in want)
    # The saved JSON keeps the padding and truncation (the app loads it with Tokenizer.from_file).
    from tokenizers import Tokenizer

    save(ours, tmp_path / "tokenizer.json")
    loaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert encode(loaded, PROMPTS) == want
    assert padding_of(loaded) == (77, reference.pad_token_id)


def test_known_ids(tmp_path: Path) -> None:
    """Golden ids: the merges spell 'the</w>' and 'cat</w>'; ',' and '!' are word-final bytes; eos pads."""
    vocab, _ = clip_vocab_and_merges()
    tok = clip_tokenizer_from_folder(write_clip_tokenizer_files(tmp_path / "tok"), max_length=8)
    ids = encode(tok, ["The CAT, cat!"])[0]
    assert ids == [vocab[BOS], vocab["the</w>"], vocab["cat</w>"], vocab[",</w>"], vocab["cat</w>"], vocab["!</w>"],
                   vocab[EOS], vocab[EOS]]
    long = encode(tok, ["the " * 20])[0]  # truncated to 8 with both specials kept
    assert long == [vocab[BOS], *[vocab["the</w>"]] * 6, vocab[EOS]]


def test_bad_files(tmp_path: Path) -> None:
    vocab, merges = clip_vocab_and_merges()
    with pytest.raises(BundleError, match="lacks"):
        build_clip_tokenizer(vocab, [*merges, ("q", "z</w>")])
    with pytest.raises(BundleError, match=re.escape("no '<|startoftext|>'")):
        build_clip_tokenizer({k: v for k, v in vocab.items() if k != BOS}, merges)
    folder = write_clip_tokenizer_files(tmp_path / "tok")
    (folder / "merges.txt").unlink()
    with pytest.raises(BundleError, match="has no merges.txt"):
        clip_tokenizer_from_folder(folder)
